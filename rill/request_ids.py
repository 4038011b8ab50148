"""Request ids: taken from a trusted proxy's ``X-Request-ID`` or made here, and returned.

Every response carries ``X-Request-ID``; every log line made while handling the request
carries it as ``request_id`` (:class:`rill.logs.RequestContextFilter`), and so do gunicorn's
access line and the stream's summary line. A proxy's id (nginx's ``$request_id``,
ingress-nginx's ``X-Request-ID``) is believed only from ``RILL_TRUSTED_PROXIES`` and only
when it is 1 to 128 characters of ``[A-Za-z0-9._:@/+=-]``; anything else gets a new id, so a
client cannot write arbitrary text into the logs.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING

from flask import Response, g, request

if TYPE_CHECKING:
    from .security import Scope

HEADER = "X-Request-ID"
VALID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def init_app(scope: Scope) -> None:
    """Assign ``g.request_id`` before each request in ``scope``; send it back after."""
    scope.before_request(_assign)
    scope.after_request(_expose)


def current() -> str | None:
    """The current request's id (inside a request context), else ``None``."""
    return g.get("request_id")


def _assign() -> None:
    from .extension import state

    given = request.headers.get(HEADER, "")
    if given and VALID.fullmatch(given) and state().auth.from_trusted_proxy():
        g.request_id = given
    else:
        g.request_id = secrets.token_hex(16)


def _expose(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id and HEADER not in response.headers:
        response.headers[HEADER] = request_id
    return response
