"""The chat page."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app, render_template, url_for

from rill import state
from rill.upstreams.demo import MODEL as DEMO_MODEL

ROOT = Path(__file__).resolve().parents[1]
# Its own templates and static files, so the page also works inside a host app, whose
# folders are its own; names are namespaced (page/…) so a host's base.html never wins.
bp = Blueprint("page", __name__, template_folder=str(ROOT / "templates"),
               static_folder=str(ROOT / "static"), static_url_path="/rill-static")


@bp.get("/")
def index() -> str:
    """Render the chat page."""
    config = current_app.config
    demo = state().upstream.demo
    models = [] if demo else config["RILL_MODELS"]
    default = DEMO_MODEL if demo else config["RILL_MODEL"]
    return render_template(
        "page/chat.html",
        demo=demo,
        models=models,
        default_model=models[0] if models and default not in models else default,
        api_url=url_for("api.chat"),
    )
