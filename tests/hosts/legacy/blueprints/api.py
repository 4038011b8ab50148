from flask import Blueprint, jsonify, request
from flask_login import current_user, login_required

from app.models import Note

bp = Blueprint("api", __name__)


@bp.get("/status")
def status():
    return jsonify(status="ok", version="1.4.2")


@bp.get("/notes")
@login_required
def list_notes():
    return jsonify(notes=[note.to_dict() for note in Note.for_user(current_user.id)])


@bp.post("/notes")
@login_required
def create_note():
    body = (request.get_json(silent=True) or {}).get("body", "").strip()
    if not body:
        return jsonify(error="body is required"), 400
    return jsonify(Note.create(current_user.id, body).to_dict()), 201
