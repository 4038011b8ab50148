"""Rill: stream LLM chat completions to browsers over Server-Sent Events.

``Rill(app)`` or ``rill.init_app(app)`` adds Rill to a Flask app: its settings (defaults
under the app's own), the upstream, the stream caps, rate limits, security headers and the
blueprints. State lives in ``app.extensions["rill"]`` (a :class:`RillState`).
``@rill.tool`` makes a function of the app a tool the model may call (:mod:`rill.tools`).

The names below are imported on first use (PEP 562), so that ``gunicorn.conf.py`` can use
:mod:`rill.logs` in the arbiter without importing Flask, ``ssl`` or ``socket`` before the
gevent worker patches them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import RillError
    from .extension import Rill, state
    from .service import RillState
    from .tools import tool

__all__ = ["Rill", "RillError", "RillState", "state", "tool"]

_LAZY = {"Rill": "extension", "state": "extension", "RillError": "errors",
         "RillState": "service", "tool": "tools"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rill' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value
