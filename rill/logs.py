"""Logs: JSON lines that carry the request id and never a secret or a prompt.

:class:`JsonFormatter` writes one JSON object per line (python-json-logger with orjson):
``time`` (RFC 3339, UTC, ms), ``level``, ``logger``, ``pid``, ``message``, ``request_id``
when the record comes from a request, and any ``extra`` fields. gunicorn's access records become
fields too (``method``, ``path``, ``status``, ``duration_ms``, …).

:class:`RedactingFilter` sits on every handler (a filter on a logger would miss records from
its children), including gunicorn's error and access logs, so a secret in a message, an
exception or a request line is masked wherever it comes from; :class:`JsonFormatter` masks
every field it writes again (python-json-logger formats tracebacks itself, after the
filters, and copies ``extra`` fields as given). The secrets to mask (the API key, the JWT
and CSRF secrets: :func:`learn`) are the process's, known to both.

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


# Cheap first look: a string with none of these and no known secret needs no regex pass.
_HINT = re.compile(r"(?i)bearer|eyJ|[srp]k-")
_KNOWN: list[str] = []  # this process's secrets (:func:`learn`), masked wherever they appear


def learn(secrets: Iterable[str]) -> None:
    """Mask ``secrets`` in every log line of this process (values shorter than 6
    characters are not masked)."""
    _KNOWN.extend(s for s in secrets if s and len(s) >= 6 and s not in _KNOWN)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with ``secrets``, every learned secret and secret-shaped strings
    (Bearer tokens, JWTs, OpenAI-style keys) masked."""
    for secret in (*secrets, *_KNOWN):
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    if _HINT.search(text):
        for pattern in PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text


def redact_value(value: Any) -> Any:
    """``value`` (a log field) with every string in it redacted, through dicts, lists and
    tuples; other objects become their redacted ``str`` (numbers, bools and None stay)."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return redact(str(value))


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message, access atoms, exception and stack text before
    any formatter sees them (gunicorn's text formatter too); :class:`JsonFormatter` masks
    every field again as it writes it, ``extra`` fields and tracebacks included."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.learn(secrets)

    def learn(self, secrets: Iterable[str]) -> None:
        """Mask ``secrets`` too (:func:`learn`: for the whole process)."""
        learn(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, Mapping):  # gunicorn's access atoms: keep them fields
            args: Any = record.args
            # Only the atoms that can reach a line: those the format names, and the fields
            # JsonFormatter adds (every header and environ atom would cost ~60 µs a request).
            for key in _atoms_shown(str(record.msg)):
                value = args.get(key)
                if isinstance(value, str):
                    dict.__setitem__(args, key, redact(value))
        else:
            message = record.getMessage()
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
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


_OWN_FIELDS = frozenset({"time", "level", "logger", "pid"})


class TextFormatter(logging.Formatter):
    """``logging.Formatter`` whose whole line (traceback included) is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(OrjsonFormatter):
    """One JSON object per record: time, level, logger, pid, message, then the extras."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("rename_fields",
                          {"levelname": "level", "name": "logger", "process": "pid"})
        super().__init__("%(levelname)s %(name)s %(process)s %(message)s", **kwargs)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        """Every field but our own (time, level, logger, pid) passes :func:`redact_value`:
        python-json-logger formats ``exc_info`` and ``stack_info`` itself (after the
        filters ran) and copies ``extra`` fields as they are."""
        log_data["time"] = _rfc3339(record.created)
        super().add_fields(log_data, record, message_dict)
        for key, value in log_data.items():
            if key not in _OWN_FIELDS:
                log_data[key] = redact_value(value)
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            log_data.update(_access_fields(record.args))  # atoms the filter redacted


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

    Also stops log records from naming their thread, process name and caller
    (``logging.logThreads``, ``logMultiprocessing`` and ``_srcfile``, the logging HOWTO's
    "Optimization"), which no line shows:
    under gevent, the first record from each new greenlet (each connection's access line)
    made ``threading.current_thread()`` build a dummy thread for it, about 25 µs.
    """
    logging.logThreads = False
    logging.logMultiprocessing = False
    # No line shows where a record was logged from (file, line, function): skip the stack
    # walk each record made to find it (the same HOWTO's table, ``logging._srcfile``).
    logging._srcfile = None  # type: ignore[attr-defined]
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
        TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
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
