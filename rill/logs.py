"""Logging that never carries secrets: API keys, Bearer tokens and JWTs are redacted.

:class:`RedactingFilter` sits on every handler (a filter on a logger would miss records from
its children), including gunicorn's error and access logs, so a secret in a message, an
exception or a request line is masked wherever it comes from.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

REDACTED = "[redacted]"
PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),  # a JWT
    re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_-]{8,}"),  # OpenAI-style keys
)


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
        self.secrets = [s for s in secrets if s and len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True


def install(secrets: Iterable[str] = ()) -> RedactingFilter:
    """Put one redacting filter on the handlers of the root and gunicorn loggers."""
    known = [*secrets, os.environ.get("OPENAI_API_KEY", "")]
    redacting = RedactingFilter(known)
    for name in (None, "gunicorn.error", "gunicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(redacting)
    return redacting
