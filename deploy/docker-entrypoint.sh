#!/bin/sh
# The image's entrypoint, run by tini (PID 1). `exec` replaces this shell with gunicorn, so
# gunicorn's arbiter is tini's direct child and receives SIGTERM itself (a shell would not
# forward it, and the drain would never start).
#
#   docker run rill                    gunicorn -c python:rill.gunicorn_conf rill.wsgi:app
#   docker run rill --workers 4        extra gunicorn options (also: GUNICORN_CMD_ARGS)
#   docker run -it rill sh             any other command runs as given
set -eu
case "${1:-}" in
  ""|-*) exec gunicorn -c python:rill.gunicorn_conf "$@" rill.wsgi:app ;;
  *) exec "$@" ;;
esac
