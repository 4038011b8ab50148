"""Users and notes in sqlite3, one connection per request (as in Flask's tutorial)."""

from __future__ import annotations

import sqlite3

from flask import Flask, current_app, g
from flask_login import UserMixin

SCHEMA = """
CREATE TABLE IF NOT EXISTS user (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT UNIQUE NOT NULL
);
CREATE TABLE IF NOT EXISTS note (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES user (id),
    body TEXT NOT NULL
);
INSERT OR IGNORE INTO user (username) VALUES ('alice'), ('bob');
"""


def init_db(app: Flask) -> None:
    with sqlite3.connect(app.config["DATABASE"]) as db:
        db.executescript(SCHEMA)


def get_db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = sqlite3.connect(current_app.config["DATABASE"])
        g.db.row_factory = sqlite3.Row
    return g.db


def close_db(error: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


class User(UserMixin):
    def __init__(self, id: int, username: str) -> None:
        self.id = id
        self.username = username

    @classmethod
    def get(cls, user_id: str) -> User | None:
        row = get_db().execute("SELECT * FROM user WHERE id = ?", (user_id,)).fetchone()
        return cls(row["id"], row["username"]) if row else None

    @classmethod
    def by_name(cls, username: str) -> User | None:
        row = get_db().execute("SELECT * FROM user WHERE username = ?", (username,)).fetchone()
        return cls(row["id"], row["username"]) if row else None


class Note:
    def __init__(self, id: int, user_id: int, body: str) -> None:
        self.id = id
        self.user_id = user_id
        self.body = body

    @classmethod
    def for_user(cls, user_id: int) -> list[Note]:
        rows = get_db().execute("SELECT * FROM note WHERE user_id = ? ORDER BY id",
                                (user_id,)).fetchall()
        return [cls(row["id"], row["user_id"], row["body"]) for row in rows]

    @classmethod
    def count_for(cls, user_id: int) -> int:
        return get_db().execute("SELECT count(*) FROM note WHERE user_id = ?",
                                (user_id,)).fetchone()[0]

    @classmethod
    def create(cls, user_id: int, body: str) -> Note:
        db = get_db()
        cursor = db.execute("INSERT INTO note (user_id, body) VALUES (?, ?)", (user_id, body))
        db.commit()
        return cls(cursor.lastrowid, user_id, body)

    def to_dict(self) -> dict:
        return {"id": self.id, "body": self.body}
