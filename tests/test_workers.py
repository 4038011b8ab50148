"""Rill refuses the gunicorn setups it cannot work in (rill.workers), whatever the command."""

from __future__ import annotations

import pytest
from gunicorn.config import Config

from rill.workers import WorkerSetupError, check, gunicorn_settings


def settings(*args: str) -> Config:
    cfg = Config()
    for name, value in zip(args[::2], args[1::2], strict=True):
        cfg.set(name, value)
    return cfg


MEMORY, REDIS = {"RILL_REDIS_URL": ""}, {"RILL_REDIS_URL": "redis://127.0.0.1:6379/0"}


@pytest.mark.parametrize("cfg", [settings(), settings("worker_class", "sync"),
                                 settings("worker_class", "gthread")])
def test_a_worker_a_stream_holds_whole_is_refused_naming_gevent_and_gthread(cfg) -> None:
    with pytest.raises(WorkerSetupError, match=r"gevent.*gthread"):
        check(MEMORY, cfg)


@pytest.mark.parametrize("cfg", [settings("worker_class", "gevent"),
                                 settings("worker_class", "gthread", "threads", 8),
                                 settings("threads", 8)])  # gunicorn makes that gthread
def test_gevent_and_threaded_workers_are_accepted(cfg) -> None:
    check(MEMORY, cfg)


def test_several_workers_need_redis() -> None:
    cfg = settings("worker_class", "gevent", "workers", 2)
    with pytest.raises(WorkerSetupError, match="RILL_REDIS_URL"):
        check(MEMORY, cfg)
    check(REDIS, cfg)


def test_settings_are_found_on_the_stack_as_gunicorn_loads_the_app() -> None:
    class Worker:  # gunicorn's Worker.load_wsgi runs with the worker, holding cfg, as self
        def __init__(self, cfg: Config) -> None:
            self.cfg = cfg

        def load_wsgi(self) -> Config | None:
            return gunicorn_settings()

    cfg = settings("worker_class", "gevent")
    assert Worker(cfg).load_wsgi() is cfg
    assert gunicorn_settings() is None, "not under gunicorn: nothing to check"
