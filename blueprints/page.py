"""The chat page."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_wtf.csrf import generate_csrf
from werkzeug.wrappers import Response

from rill import state
from rill.auth import AuthError, current_user
from rill.limits import stream_cap
from rill.upstreams.demo import MODEL as DEMO_MODEL

# Installed, this is rill/blueprints/page.py beside rill/templates and rill/static; in the
# repo, blueprints/page.py beside templates/ and static/ (pyproject.toml maps them).
ROOT = Path(__file__).resolve().parents[1]
# Its own templates and static files, so the page also works inside a host app, whose
# folders are its own. Names are namespaced (rill/…): a host's base.html never wins, and a
# host may override rill/base.html on purpose to give the page its own layout.
bp = Blueprint("rill_page", __name__, template_folder=str(ROOT / "templates"),
               static_folder=str(ROOT / "static"), static_url_path="/rill-static")


@bp.get("/")
def index() -> str | Response | tuple[str, int]:
    """Render the chat page; send a visitor no one signed in to the login page."""
    rill = state()
    user = None
    if rill.auth.mode in ("host", "header"):  # identity the page request itself carries
        try:
            user = current_user()
        except AuthError:
            if rill.login_url:
                return redirect(_login_location(rill.login_url))
            return "Sign in to use the chat.", 401
    config = current_app.config
    demo = rill.upstream.demo
    models = [] if demo else [m for m in config["RILL_MODELS"] if m != "*"]
    default = DEMO_MODEL if demo else config["RILL_MODEL"]
    return render_template(
        "rill/chat.html",
        demo=demo,
        models=models,
        default_model=models[0] if models and default not in models else default,
        api_url=url_for("rill_api.chat"),
        csrf_token=generate_csrf,
        # Conversations are kept in the browser under this key: another user's are not shown.
        user_key=hashlib.sha256(user.encode()).hexdigest()[:16] if user else "",
        max_streams=rill.caps.client_cap(stream_cap()),  # the page keeps to the server's cap
        login_url=_login_location(rill.login_url) if rill.login_url else "",
    )


def _login_location(login_url: str) -> str:
    """``login_url`` (a URL, or an endpoint name) with ``next`` set to this page."""
    target = login_url if "/" in login_url else url_for(login_url)
    parts = urlsplit(target)
    here = request.full_path.rstrip("?")
    query = "&".join(filter(None, (parts.query, urlencode({"next": here}))))
    return urlunsplit(parts._replace(query=query))
