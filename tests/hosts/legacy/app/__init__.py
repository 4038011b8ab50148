"""Jotter: a small notes app (Flask, Flask-Login, Flask-WTF, sqlite3).

Run it with ``flask --app app run`` or ``gunicorn -k gevent app:app`` from this folder.
"""

import os

from flask import Flask, jsonify, render_template, request
from flask_login import LoginManager, current_user
from flask_wtf.csrf import CSRFProtect

from app import models

app = Flask(__name__, template_folder="../templates", static_folder="../static")
app.config.from_mapping(
    SECRET_KEY=os.environ.get("JOTTER_SECRET_KEY", "jotter-dev-key-change-me"),
    DATABASE=os.path.join(app.instance_path, "jotter.sqlite"),
)
os.makedirs(app.instance_path, exist_ok=True)
models.init_db(app)
app.teardown_appcontext(models.close_db)

csrf = CSRFProtect(app)
login_manager = LoginManager(app)
login_manager.login_view = "auth.login"
login_manager.user_loader(models.User.get)


@app.context_processor
def inject_note_count() -> dict:
    count = models.Note.count_for(current_user.id) if current_user.is_authenticated else 0
    return {"note_count": count}


@app.errorhandler(404)
def not_found(error):
    if request.path.startswith("/api/"):
        return jsonify(error="not found"), 404
    return render_template("404.html"), 404


from blueprints import api, auth, main  # noqa: E402  (they import app.models)

app.register_blueprint(main.bp)
app.register_blueprint(auth.bp)
app.register_blueprint(api.bp, url_prefix="/api")

# --- Rill ---
from rill import Rill  # noqa: E402

Rill(app, url_prefix="/assistant", user_loader=lambda: current_user.get_id())
# --- end Rill ---
