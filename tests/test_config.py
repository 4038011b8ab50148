"""Settings from the environment, and the app factory."""

from __future__ import annotations

import pytest

from app import create_app
from rill.config import DEFAULTS, SETTINGS, ConfigError, from_env
from rill.upstreams import create
from rill.upstreams.demo import DemoUpstream
from rill.upstreams.openai_compat import OpenAIUpstream


def test_environment_values_are_parsed_by_type() -> None:
    config: dict = {}
    from_env(config, {"RILL_MAX_STREAMS": "12", "RILL_MODELS": "a, b,,c",
                      "RILL_RATELIMIT_ENABLED": "off", "RILL_HEARTBEAT_SECONDS": "2.5",
                      "RILL_MODEL": "123", "UNRELATED": "x"})
    assert config == {"RILL_MAX_STREAMS": 12, "RILL_MODELS": ["a", "b", "c"],
                      "RILL_RATELIMIT_ENABLED": False, "RILL_HEARTBEAT_SECONDS": 2.5,
                      "RILL_MODEL": "123"}


@pytest.mark.parametrize(("name", "value"), [("RILL_MAX_STREAMS", "many"),
                                             ("RILL_RATELIMIT_ENABLED", "maybe"),
                                             ("RILL_TOOL_TIMEOUT_SECONDS", "0"),
                                             ("RILL_TOOL_RESULT_MAX_BYTES", "-1")])
def test_a_bad_environment_value_names_the_variable(name, value) -> None:
    with pytest.raises(ConfigError, match=name):
        from_env({}, {name: value})


def test_create_app_reads_the_environment_then_test_config(monkeypatch) -> None:
    monkeypatch.setenv("RILL_MAX_STREAMS", "7")
    monkeypatch.setenv("RILL_MAX_MESSAGES", "3")
    app = create_app({"RILL_MAX_MESSAGES": 9, "RILL_UPSTREAM": "demo"})
    assert app.config["RILL_MAX_STREAMS"] == 7
    assert app.config["RILL_MAX_MESSAGES"] == 9


def test_every_setting_has_a_default_and_a_meaning() -> None:
    assert set(DEFAULTS) == {s.name for s in SETTINGS}
    assert all(s.name.startswith("RILL_") and s.meaning for s in SETTINGS)


@pytest.mark.parametrize(
    ("environ", "kind"),
    [({}, DemoUpstream), ({"OPENAI_API_KEY": "sk-test"}, OpenAIUpstream),
     ({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}, OpenAIUpstream)],
)
def test_auto_upstream_is_openai_when_configured_else_demo(environ, kind, monkeypatch) -> None:
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    assert isinstance(create({**DEFAULTS}, environ), kind)


def test_unknown_upstream_is_refused() -> None:
    with pytest.raises(ValueError, match="RILL_UPSTREAM='nope'"):
        create({**DEFAULTS, "RILL_UPSTREAM": "nope"}, {})


def test_readme_documents_every_setting() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    missing = [s.name for s in SETTINGS if f"| `{s.name}` |" not in readme]
    assert not missing


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer [redacted]"),
        ("key sk-proj-ABCDEFGH12345678 refused", "key [redacted] refused"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl here",
         "token [redacted] here"),
        ("the configured secret s3cr3t-value leaked", "the configured secret [redacted] leaked"),
        ("nothing secret", "nothing secret"),
    ],
)
def test_log_lines_are_redacted(message, expected, caplog) -> None:
    import logging

    from rill.logs import RedactingFilter

    record = logging.LogRecord("t", logging.WARNING, __file__, 1, "%s", (message,), None)
    RedactingFilter(["s3cr3t-value"]).filter(record)
    assert record.getMessage() == expected
