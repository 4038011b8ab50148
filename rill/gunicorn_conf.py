"""gunicorn settings for Rill: one gevent worker per core, many streams per worker.

Read by ``gunicorn -c python:rill.gunicorn_conf app:app`` (the repo's ``gunicorn.conf.py``
imports this module). Nothing here imports the app or a network
library: the gevent worker monkey-patches the standard library when it starts, and anything
that imported ``ssl`` or ``socket`` before that keeps blocking, unpatched sockets — every
HTTPS upstream request then fails inside ``ssl.wrap_socket``, and plain-HTTP ones block the
whole worker. ``--preload`` imports the app in the arbiter, so then this file patches first.
Every setting can be overridden by an environment variable.
"""

import gc
import os
import resource
import signal
import sys

# With --preload the app, and with it ssl and socket, is imported in the arbiter before the
# worker patches; patch first so the app's sockets are cooperative.
if "--preload" in sys.argv or "--preload" in os.environ.get("GUNICORN_CMD_ARGS", ""):
    from gevent import monkey

    monkey.patch_all()


def _env(name, default):
    return os.environ.get(name) or default


# Each stream is one greenlet; one worker per core is the scaling unit. With the memory hub a
# stream lives in the worker that started it, so there may be only one; with Redis any worker
# serves any stream, and the default is one per core.
_redis_hub = bool(os.environ.get("RILL_REDIS_URL"))
worker_class = "gevent"
workers = int(_env("WEB_CONCURRENCY", str(os.cpu_count() or 1) if _redis_hub else "1"))
# worker_connections caps concurrent connections, so streams, per worker; gunicorn's
# default of 1,000 is too low for long-lived SSE.
worker_connections = int(_env("RILL_WORKER_CONNECTIONS", "10000"))
# Connections the kernel queues before a worker accepts them (past it, a burst's new
# connections are reset). gunicorn's 2,048 reset 15 % of bench's `held` burst (8,000
# streams over 10 s) on two busy workers; 4,096 reset none (bench/PROFILE.md). The kernel
# caps it at net.core.somaxconn (4,096 since Linux 5.4).
backlog = int(_env("RILL_BACKLOG", "4096"))

# PORT (Heroku, Cloud Run, ...) means "listen on every interface on this port".
_port = os.environ.get("PORT")
bind = [_env("RILL_BIND", f"0.0.0.0:{_port}" if _port else "127.0.0.1:8000")]

# On SIGTERM, streams in flight get this long to finish before the worker is killed.
graceful_timeout = int(_env("RILL_GRACEFUL_TIMEOUT", "30"))
# A gevent worker notifies the arbiter from its own greenlet; a worker that cannot do so
# for this long is starved or hung and gets restarted.
timeout = int(_env("RILL_WORKER_TIMEOUT", "30"))
# The gevent worker reads each request's line and headers (and, on a kept-alive connection,
# waits for the next request) under a keepalive-long timeout: the only bound on slow headers,
# since nothing else times the read. 0 would turn keep-alive off and that bound with it.
keepalive = int(_env("RILL_KEEPALIVE", "5"))
if keepalive < 1:
    raise SystemExit("rill: RILL_KEEPALIVE must be at least 1 (seconds): under gevent it also "
                     "bounds how long a request's headers may take to arrive")
# Which peers may set X-Forwarded-Proto (wsgi.url_scheme) and gunicorn's other forwarded
# headers (SCRIPT_NAME, PATH_INFO) for gunicorn itself. Like the app's ProxyFix, it follows
# RILL_PROXY_HOPS: with no trusted proxy, nobody (not even a loopback peer); with one,
# loopback; FORWARDED_ALLOW_IPS, set, decides.
try:
    _proxy_hops = int(os.environ.get("RILL_PROXY_HOPS") or "0")
except ValueError:
    raise SystemExit("rill: RILL_PROXY_HOPS must be a whole number") from None
forwarded_allow_ips = _env("FORWARDED_ALLOW_IPS", "127.0.0.1,::1" if _proxy_hops > 0 else "")

# Logs go to stdout, where container runtimes and systemd collect them ("-" is stderr for
# gunicorn's error log). By default every line is a JSON object (rill.logs, which imports
# neither Flask nor a network library, so the arbiter stays unpatched-safe); the access
# line carries the response's X-Request-ID. RILL_LOG_FORMAT=text keeps gunicorn's own lines.
accesslog = "-"
logger_class = "rill.access_log.AccessLogger"  # only the atoms a line shows (bench/PROFILE.md)
errorlog = "/dev/stdout"
loglevel = _env("RILL_LOG_LEVEL", "info")
_log_format = _env("RILL_LOG_FORMAT", "json")
if _log_format not in ("json", "text"):
    raise SystemExit(f"rill: RILL_LOG_FORMAT={_log_format!r} is not one of: json, text")
if _log_format == "json":
    from rill.logs import gunicorn_config

    logconfig_dict = gunicorn_config(loglevel)

# gunicorn 27's control socket is one per user ($HOME/.gunicorn/gunicorn.ctl): two
# instances on one machine (tests, blue/green) would fight over it. Off unless asked for.
control_socket_disable = _env("RILL_CONTROL_SOCKET", "") == ""
if not control_socket_disable:
    control_socket = os.environ["RILL_CONTROL_SOCKET"]

# Prometheus metrics are summed across workers from files in one folder: a fresh one per
# start unless the operator names one (rill.metrics).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="rill-metrics-")


_dead_workers: list[int] = []


def child_exit(server, worker):
    """Fold a dead worker's live gauges out of the metrics (prometheus_client's recipe).

    gunicorn before 22 runs this inside its SIGCHLD handler, so one call can come inside
    another: a second worker's exit during the first one's import of prometheus_client met
    the half-imported module (an ImportError that crashed the arbiter's shutdown). The inner
    call leaves its pid to the outer one."""
    _dead_workers.append(worker.pid)
    if len(_dead_workers) > 1:
        return
    try:
        from prometheus_client import multiprocess

        while _dead_workers:
            multiprocess.mark_process_dead(_dead_workers[0])
            del _dead_workers[0]
    finally:
        _dead_workers.clear()


# Each stream holds two sockets (client and upstream): lift the soft open-files limit to the
# hard one, which workers inherit.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft < _hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))


# CPython's cyclic garbage collector was the largest cost of a worker holding 8,000 streams:
# with its default thresholds (700, 10, 10) about 45% of the worker's CPU (perf, in the
# benchmark's `held`), scanning each stream's long-lived objects again and again. The worker
# freezes what it imported (the app, the modules: never scanned again) and collects its
# youngest generation every 10,000 allocations instead of every 700: GC then took about 4 of
# the 27 CPU-seconds of `held`, with young-generation pauses of about 7 ms and 90 ms.
try:
    _gc_thresholds = tuple(int(n) for n in _env("RILL_GC_THRESHOLDS", "10000,10,10").split(","))
    assert len(_gc_thresholds) == 3 and _gc_thresholds[0] > 0
except (ValueError, AssertionError):
    raise SystemExit("rill: RILL_GC_THRESHOLDS must be three whole numbers, the first > 0, "
                     "as for gc.set_threshold (e.g. 10000,10,10)") from None


def post_worker_init(worker):
    """Tune the garbage collector (above); on SIGTERM, drain Rill's streams before
    graceful_timeout ends (rill.lifecycle)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_gc_thresholds)
    # Imported here, in the patched worker, not in the handler: a second SIGTERM that comes
    # while the first handler is still importing would find the module half-initialised.
    from rill.lifecycle import begin_drain

    handle_exit = worker.handle_exit

    def drain_then_exit(sig, frame):
        if hasattr(worker.wsgi, "extensions"):
            begin_drain(worker.wsgi, worker.cfg.graceful_timeout)
        handle_exit(sig, frame)

    signal.signal(signal.SIGTERM, drain_then_exit)
    signal.siginterrupt(signal.SIGTERM, False)
