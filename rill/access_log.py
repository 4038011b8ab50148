"""gunicorn's access log, building only the atoms its line can show.

gunicorn's ``Logger.atoms`` makes an atom of every request header (``{name}i``), response
header (``{name}o``) and environ entry (``{name}e``), about 60 a request, and ``SafeAtoms``
escapes each again, before the format picks a handful: about 40 µs of every request, a
stream start included (``bench/PROFILE.md``). :class:`AccessLogger` hands gunicorn's own
``atoms`` the entries it reads for its fixed atoms (``h``, ``r``, ``s``, ``u``, …) and those
that ``access_log_format`` or Rill's JSON fields (:data:`rill.logs.ACCESS_FIELDS`) name, so
every line reads as before. Set by ``rill.gunicorn_conf`` as ``logger_class``.
"""

from __future__ import annotations

import functools
import re
from types import SimpleNamespace
from typing import Any

from gunicorn.glogging import Logger

from .logs import ACCESS_FIELDS

# What gunicorn's atoms() reads from the environ for its fixed atoms (21.2 to 27).
_FIXED_ENVIRON = frozenset({"REMOTE_ADDR", "REQUEST_METHOD", "RAW_URI", "SERVER_PROTOCOL",
                            "PATH_INFO", "QUERY_STRING", "HTTP_REFERER", "HTTP_USER_AGENT",
                            "HTTP_AUTHORIZATION"})


@functools.lru_cache(maxsize=8)
def _named(access_format: str) -> dict[str, frozenset[str]]:
    """The header and environ atoms ``access_format`` names, by kind (``i``, ``o``, ``e``),
    lower-cased as gunicorn keys them; the response's X-Request-ID always (a JSON field)."""
    kinds: dict[str, set[str]] = {"i": set(), "o": {"x-request-id"}, "e": set()}
    for name, kind in re.findall(r"%\(\{([^}]*)\}([ioe])\)", access_format):
        kinds[kind].add(name.lower())
    for atom in ACCESS_FIELDS:
        if atom.startswith("{") and atom[-1] in kinds:
            kinds[atom[-1]].add(atom[1:-2].lower())
    return {kind: frozenset(names) for kind, names in kinds.items()}


class AccessLogger(Logger):
    """``gunicorn.glogging.Logger`` whose atoms leave out what no line shows."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any],
              request_time: Any) -> dict[str, Any]:
        named = _named(self.cfg.access_log_format)
        environ = {key: value for key, value in environ.items()
                   if key in _FIXED_ENVIRON or (named["e"] and key.lower() in named["e"])}
        headers = getattr(req, "headers", req)
        headers = headers.items() if hasattr(headers, "items") else headers
        req = SimpleNamespace(headers=[h for h in headers if h[0].lower() in named["i"]])
        resp = SimpleNamespace(status=resp.status, sent=getattr(resp, "sent", None), headers=[
            h for h in resp.headers if h[0].lower() in named["o"]])
        return super().atoms(resp, req, environ, request_time)  # type: ignore[no-any-return]
