"""The chat page."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, url_for

from rill import state
from rill.upstreams.demo import MODEL as DEMO_MODEL

bp = Blueprint("page", __name__)


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
