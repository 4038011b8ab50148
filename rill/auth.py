"""Who is asking: pluggable identity for the API (``RILL_AUTH``).

- ``none``: anonymous; limits key by client address.
- ``jwt``: ``Authorization: Bearer <JWT>`` verified with PyJWT (RFC 7519) against
  ``RILL_JWT_SECRET`` (HS256), a PEM ``RILL_JWT_PUBLIC_KEY`` (RS256/ES256) or a JWKS at
  ``RILL_JWT_JWKS_URL`` (cached; an unknown ``kid`` refetches it). ``exp`` is required,
  ``iss``/``aud`` checked when configured, ``sub`` is the user id (a non-empty string, else
  401); ``RILL_JWT_SCOPE`` must be among the space-separated ``scope`` claim. Failures
  follow RFC 6750 section 3: 401 with
  ``WWW-Authenticate: Bearer realm="rill"[, error="invalid_token", …]``; a missing scope is
  403 ``insufficient_scope``.
- ``header``: a reverse proxy's header (``RILL_AUTH_HEADER``, e.g. oauth2-proxy's
  ``X-Forwarded-User``), believed only from peers in ``RILL_TRUSTED_PROXIES``.
- a host app's ``user_loader`` (``Rill(app, user_loader=…)``): the host's own login.
"""

from __future__ import annotations

import inspect
import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from flask import current_app, g, request

from .errors import RillError

UserLoader = Callable[[], str | None]


class AuthError(RillError):
    """401 with an RFC 6750 ``WWW-Authenticate`` challenge (``challenge``)."""

    status = 401
    code = "unauthorized"
    message = "Sign in to use this API: send Authorization: Bearer <token>."

    def __init__(self, message: str | None = None, *, error: str | None = None,
                 scope: str | None = None) -> None:
        super().__init__(message)
        parts = ['Bearer realm="rill"']
        if error:
            parts.append(f'error="{error}"')
            parts.append(f'error_description="{self.message}"')
        if scope:
            parts.append(f'scope="{scope}"')
        self.challenge = ", ".join(parts)


class Forbidden(AuthError):
    status = 403
    code = "insufficient_scope"
    message = "This token lacks the scope this API needs."


class Authenticator:
    """Turns a request into a user id (``str``) or ``None`` (anonymous)."""

    def __init__(self, config: Mapping[str, Any], user_loader: UserLoader | None = None) -> None:
        self.mode = "host" if user_loader else config["RILL_AUTH"]
        if self.mode not in ("none", "jwt", "header", "host"):
            raise ValueError(f"RILL_AUTH={self.mode!r} is not one of: none, jwt, header")
        self.user_loader = user_loader
        self.header = config["RILL_AUTH_HEADER"]
        self.trusted = [ipaddress.ip_network(p, strict=False)
                        for p in config["RILL_TRUSTED_PROXIES"]]
        self.jwt = _JWTVerifier(config) if self.mode == "jwt" else None

    def user(self) -> str | None:
        """Return the user id of the current request. Raises :class:`AuthError`."""
        if self.mode == "none":
            return None
        if self.mode == "host":
            assert self.user_loader is not None
            user = self.user_loader()
            if not user:
                raise AuthError("Sign in to use this API.")
            return str(user)
        if self.mode == "header":
            return self._from_header()
        assert self.jwt is not None
        return self.jwt.verify(request.headers.get("Authorization", ""))

    def from_trusted_proxy(self) -> bool:
        """Whether this request's TCP peer is in ``RILL_TRUSTED_PROXIES``.

        The peer is the address before werkzeug's ProxyFix rewrote ``REMOTE_ADDR`` from
        ``X-Forwarded-For`` (that is the client, not the proxy).
        """
        orig = request.environ.get("werkzeug.proxy_fix.orig") or {}
        raw = orig.get("REMOTE_ADDR") or request.environ.get("REMOTE_ADDR") or "0.0.0.0"
        try:
            peer = ipaddress.ip_address(raw)
        except ValueError:
            return False  # a Unix-socket peer, or garbage: not a trusted proxy
        return any(peer in net for net in self.trusted)

    def _from_header(self) -> str:
        user = request.headers.get(self.header, "").strip()
        if not user or not self.from_trusted_proxy():
            raise AuthError("Sign in through the proxy in front of this API.")
        return user


class _JWTVerifier:
    """PyJWT (the ``jwt`` extra: ``pip install 'rill[jwt]'``), imported only for ``jwt``."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        try:
            import jwt
        except ImportError:
            raise ValueError("RILL_AUTH=jwt needs PyJWT: pip install 'rill[jwt]'") from None
        self.secret = config["RILL_JWT_SECRET"]
        self.public_key = config["RILL_JWT_PUBLIC_KEY"]
        url = config["RILL_JWT_JWKS_URL"]
        # PyJWT < 2.14 has no cooldown: there an unknown kid refetches the set every time.
        cooldown = ({"cooldown_duration": config["RILL_JWT_JWKS_COOLDOWN_SECONDS"]}
                    if "cooldown_duration" in inspect.signature(jwt.PyJWKClient).parameters
                    else {})
        self.jwks = jwt.PyJWKClient(url, cache_keys=False, lifespan=300, timeout=5,
                                    **cooldown) if url else None
        if not (self.secret or self.public_key or self.jwks):
            raise ValueError("RILL_AUTH=jwt needs RILL_JWT_SECRET, RILL_JWT_PUBLIC_KEY or "
                             "RILL_JWT_JWKS_URL")
        self.algorithms = ["HS256"] if self.secret else ["RS256", "ES256"]
        self.issuer = config["RILL_JWT_ISSUER"] or None
        self.audience = config["RILL_JWT_AUDIENCE"] or None
        self.scope = config["RILL_JWT_SCOPE"]
        self.leeway = config["RILL_JWT_LEEWAY_SECONDS"]

    def verify(self, authorization: str) -> str:
        import jwt

        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError()
        try:
            claims = jwt.decode(
                token.strip(), self._key(token.strip()), algorithms=self.algorithms,
                issuer=self.issuer, audience=self.audience, leeway=self.leeway,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None})
        except jwt.ExpiredSignatureError:
            raise AuthError("The token has expired.", error="invalid_token") from None
        except jwt.PyJWTError as exc:  # InvalidKeyError too: an ES256 header on an RSA key
            raise AuthError(f"The token is not valid: {_reason(exc)}.",
                            error="invalid_token") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            # An empty subject would make an ownerless stream, readable by its id alone.
            raise AuthError("The token is not valid: `sub` must be a non-empty string.",
                            error="invalid_token")
        if self.scope and self.scope not in str(claims.get("scope", "")).split():
            raise Forbidden(error="insufficient_scope", scope=self.scope)
        return subject

    def _key(self, token: str) -> Any:
        if self.jwks is not None:
            return self.jwks.get_signing_key_from_jwt(token).key
        return self.secret or self.public_key


def _reason(exc: Exception) -> str:
    """A short reason that never echoes the token."""
    import jwt

    return {
        jwt.InvalidAudienceError: "wrong audience",
        jwt.InvalidIssuerError: "wrong issuer",
        jwt.InvalidSignatureError: "bad signature",
        jwt.InvalidAlgorithmError: "algorithm not allowed",
        jwt.InvalidKeyError: "algorithm does not fit the key",
        jwt.MissingRequiredClaimError: "a required claim is missing",
        jwt.ImmatureSignatureError: "not valid yet",
        jwt.DecodeError: "malformed",
        jwt.PyJWKClientError: "unknown signing key",
    }.get(type(exc), "rejected")


def current_user() -> str | None:
    """The user id of this request (cached in ``g``). Raises :class:`AuthError`."""
    if "rill_user" not in g:
        g.rill_user = current_app.extensions["rill"].auth.user()
    return g.rill_user  # type: ignore[no-any-return]
