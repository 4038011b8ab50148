from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from app.forms import NoteForm
from app.models import Note

bp = Blueprint("main", __name__)


@bp.route("/")
def index():
    return render_template("index.html")


@bp.route("/notes", methods=["GET", "POST"])
@login_required
def notes():
    form = NoteForm()
    if form.validate_on_submit():
        Note.create(current_user.id, form.body.data)
        flash("Note saved.")
        return redirect(url_for("main.notes"))
    return render_template("notes/list.html", form=form, notes=Note.for_user(current_user.id))
