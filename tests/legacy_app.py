"""A small existing ("legacy") Flask app with its own login, limiter and security headers.

It adopts Rill in the last lines: its signed-in users stream as themselves, and its own
limiter and headers keep applying. Served by the integration tests with gunicorn.
"""

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_talisman import Talisman

app = Flask(__name__)
app.secret_key = "legacy-app-session-key-for-tests-only"
login_manager = LoginManager(app)
limiter = Limiter(get_remote_address, app=app, storage_uri="memory://")
Talisman(app, force_https=False, session_cookie_secure=False, frame_options="SAMEORIGIN",
         content_security_policy={"default-src": "'self'"})


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


@login_manager.user_loader
def load_user(user_id: str) -> User:
    return User(user_id)


@app.get("/")
def home() -> str:
    return f"legacy home of {current_user.get_id()}"


@app.post("/login/<name>")
def log_in(name: str) -> str:
    login_user(User(name))
    return "signed in"


@app.post("/logout")
def log_out() -> str:
    logout_user()
    return "signed out"


@app.get("/limited")
@limiter.limit("2/minute")
def limited() -> str:
    return "within the host's own limit"


# Adopting Rill:
from rill import Rill  # noqa: E402

Rill(app, url_prefix="/assistant", user_loader=lambda: current_user.get_id())
