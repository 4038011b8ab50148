"""Rill's own app plus test-only routes that log secrets the way a bug would: in an
exception's message (so in its traceback) and in a record's ``extra`` fields, nested too.
Served by gunicorn in tests/integration/test_abuse_errors.py only."""

import logging
import os

from app import app

log = logging.getLogger("rill.leaky")


def _secrets() -> tuple[str, str, str]:
    return (os.environ["OPENAI_API_KEY"], os.environ["RILL_JWT_SECRET"],
            os.environ["LEAKY_TOKEN"])


@app.get("/_test/raise")
def raise_with_a_secret() -> str:
    key, secret, token = _secrets()
    raise RuntimeError(f"refused {key} with {secret} for Bearer {token}")


@app.get("/_test/log")
def log_secrets() -> str:
    key, secret, token = _secrets()
    log.warning("a record with extras", extra={
        "detail": f"signed with {secret}", "headers": {"authorization": f"Bearer {token}"},
        "keys": [key, {"deep": secret}], "token": token})
    try:
        raise ValueError(f"bad key {key} / {secret}")
    except ValueError:
        log.exception("handled, with its traceback")
    log.warning("a stack", stack_info=True, extra={"why": f"{secret}"})
    return "logged"
