"""Logs: JSON lines that carry the request id and never a secret or a prompt.

:class:`JsonFormatter` writes one JSON object per line (python-json-logger with orjson):
``time`` (RFC 3339, UTC, ms), ``level``, ``logger``, ``pid``, ``message``, ``request_id``
when the record comes from a request, and any ``extra`` fields. gunicorn's access records become
fields too (``method``, ``path``, ``status``, ``duration_ms``, …).

:class:`RedactingFilter` sits on every handler (a filter on a logger would miss records from
its children), including gunicorn's error and access logs, so a secret in a message, an
exception or a request line is masked wherever it comes from.

This module imports no network library and not Flask: ``gunicorn.conf.py`` uses it in the
arbiter, before the gevent worker patches ``socket`` and ``ssl``.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from pythonjsonlogger.orjson import OrjsonFormatter

REDACTED = "[redacted]"
PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),  # a JWT
    re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_-]{8,}"),  # OpenAI-style keys
)
# gunicorn access-log atoms (glogging.Logger.atoms) and the JSON fields they become.
ACCESS_FIELDS = {"h": "remote_addr", "m": "method", "U": "path", "q": "query",
                 "H": "protocol", "s": "status", "B": "bytes", "a": "user_agent"}


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with every known secret and secret-shaped string masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    for pattern in PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self.learn(secrets)

    def learn(self, secrets: Iterable[str]) -> None:
        """Mask ``secrets`` too (values shorter than 6 characters are not masked)."""
        self.secrets += [s for s in secrets if s and len(s) >= 6 and s not in self.secrets]

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, Mapping):  # gunicorn's access atoms: keep them fields
            args: Any = record.args
            # Only the atoms that can reach a line: those the format names, and the fields
            # JsonFormatter adds (every header and environ atom would cost ~60 µs a request).
            for key in _atoms_shown(str(record.msg)):
                value = args.get(key)
                if isinstance(value, str):
                    dict.__setitem__(args, key, redact(value, self.secrets))
        else:
            message = record.getMessage()
            cleaned = redact(message, self.secrets)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True


@functools.lru_cache(maxsize=8)
def _atoms_shown(access_format: str) -> tuple[str, ...]:
    """The atoms an access line shows: named in ``access_format`` (``%(name)s``) or fields."""
    named = re.findall(r"%\(([^)]+)\)", access_format)
    # gunicorn keeps {header}i/o/e atoms lower-cased and looks them up that way.
    return tuple({*(k.lower() if k.startswith("{") else k for k in named), *ACCESS_FIELDS,
                  "{x-request-id}o"})


class RequestContextFilter(logging.Filter):
    """Give records made while a Flask request is handled its ``request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "request_id" not in record.__dict__:
            flask = sys.modules.get("flask")  # never imported here: see the module docstring
            if flask is not None and flask.has_request_context():
                request_id = flask.g.get("request_id")
                if request_id:
                    record.request_id = request_id
        return True


class JsonFormatter(OrjsonFormatter):
    """One JSON object per record: time, level, logger, pid, message, then the extras."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("rename_fields",
                          {"levelname": "level", "name": "logger", "process": "pid"})
        super().__init__("%(levelname)s %(name)s %(process)s %(message)s", **kwargs)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        log_data["time"] = _rfc3339(record.created)
        super().add_fields(log_data, record, message_dict)
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            log_data.update(_access_fields(record.args))


def _rfc3339(created: float) -> str:
    ms = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"


def _access_fields(atoms: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for atom, field in ACCESS_FIELDS.items():
        value = atoms.get(atom)
        if value not in (None, "-", ""):
            fields[field] = int(value) if field in ("status", "bytes") else value
    if "D" in atoms:
        fields["duration_ms"] = round(int(atoms["D"]) / 1000, 1)  # D is in microseconds
    request_id = atoms.get("{x-request-id}o")
    if request_id not in (None, "-"):
        fields["request_id"] = request_id
    return fields


def gunicorn_config(level: str = "INFO") -> dict[str, Any]:
    """A ``logconfig_dict`` for gunicorn: every logger as JSON lines on stdout.

    Also stops log records from naming their thread and process name (``logging.logThreads``
    and ``logMultiprocessing``, the logging HOWTO's "Optimization"), which no line shows:
    under gevent, the first record from each new greenlet (each connection's access line)
    made ``threading.current_thread()`` build a dummy thread for it, about 25 µs.
    """
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = {"class": "logging.StreamHandler", "formatter": "json",
               "stream": "ext://sys.stdout"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "filters": {"redact": {"()": f"{__name__}.RedactingFilter",
                               "secrets": [os.environ.get("OPENAI_API_KEY", "")]}},
        "handlers": {"stdout": {**handler, "filters": ["redact"]}},
        "root": {"level": level.upper(), "handlers": ["stdout"]},
        "loggers": {
            **{name: {"level": "INFO" if name.endswith("access") else level.upper(),
                      "handlers": ["stdout"], "propagate": False, "qualname": name}
               for name in ("gunicorn.error", "gunicorn.access")},
            # httpx (httpx2 under openai 3) logs every upstream request at INFO ("HTTP
            # Request: POST …"): a line per stream that the summary line already says, at a
            # measurable cost under load (bench/PROFILE.md).
            "httpx": {"level": "WARNING"},
            "httpx2": {"level": "WARNING"},
        },
    }


def basic_config(level: int = logging.INFO) -> None:
    """Log to stdout, as JSON lines unless ``RILL_LOG_FORMAT=text``, when the root logger has
    no handlers yet (under gunicorn it has: ``gunicorn.conf.py`` configured them)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        if os.environ.get("RILL_LOG_FORMAT") == "text" else JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)


def install(secrets: Iterable[str] = ()) -> None:
    """Put the redacting and request-id filters on the root and gunicorn loggers' handlers.

    A handler that has a :class:`RedactingFilter` already (gunicorn's :func:`gunicorn_config`
    puts one on in the arbiter) learns ``secrets`` too.
    """
    known = [*secrets, os.environ.get("OPENAI_API_KEY", "")]
    for name in (None, "gunicorn.error", "gunicorn.access"):
        for handler in logging.getLogger(name).handlers:
            redacting = [f for f in handler.filters if isinstance(f, RedactingFilter)]
            if redacting:
                redacting[0].learn(known)
            else:
                handler.addFilter(RedactingFilter(known))
            if not any(isinstance(f, RequestContextFilter) for f in handler.filters):
                handler.addFilter(RequestContextFilter())
