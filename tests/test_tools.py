"""Server-side tools: a function's JSON Schema, registration, RILL_TOOLS and who is offered what.

How a call runs (validation, timeouts, failures, results) is in ``test_tool_runs.py``.
"""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal, Optional

import pytest
from flask import Flask
from pydantic import BaseModel, Field

import rill
from rill import tools
from rill.app import create_app
from rill.config import ConfigError
from rill.extension import Rill
from rill.tools import ToolCall, ToolDefinitionError, ToolRegistry
from tests.conftest import TEST_CONFIG


@pytest.fixture
def default_registry() -> Iterator[ToolRegistry]:
    """:data:`rill.tools.DEFAULT`, empty for the test (another test file of this process may
    have imported a module of tools), and as it was after it."""
    saved = dict(tools.DEFAULT._tools)
    tools.DEFAULT._tools.clear()
    yield tools.DEFAULT
    tools.DEFAULT._tools.clear()
    tools.DEFAULT._tools.update(saved)


class Address(BaseModel):
    city: str
    postcode: str | None = None


def book(room: str, people: int, hours: float = 1.0, projector: bool = False,
         floor: Literal["ground", "first"] = "ground", note: Optional[str] = None,  # noqa: UP045
         guests: list[str] = [],  # noqa: B006 (pydantic copies defaults)
         address: Address | None = None,
         priority: Annotated[int, Field(description="1 is the highest", ge=1)] = 3) -> str:
    """Book a meeting room.

    Any second paragraph is for people, not for the model.
    """
    return room


def test_schema_comes_from_type_hints_defaults_and_the_docstring() -> None:
    registry = ToolRegistry()
    registry.tool(book)
    assert registry.offered(None) == [{"type": "function", "function": {
        "name": "book",
        "description": "Book a meeting room.",
        "parameters": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "room": {"type": "string"},
                "people": {"type": "integer"},
                "hours": {"type": "number", "default": 1.0},
                "projector": {"type": "boolean", "default": False},
                "floor": {"type": "string", "enum": ["ground", "first"], "default": "ground"},
                "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
                "guests": {"type": "array", "items": {"type": "string"}, "default": []},
                "address": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}],
                            "default": None},
                "priority": {"type": "integer", "minimum": 1, "default": 3,
                             "description": "1 is the highest"},
            },
            "required": ["room", "people"],
            "$defs": {"Address": {
                "title": "Address", "type": "object", "required": ["city"],
                "properties": {"city": {"type": "string"},
                               "postcode": {"anyOf": [{"type": "string"}, {"type": "null"}],
                                            "default": None}}}},
        }}}]


def test_name_and_description_can_be_given() -> None:
    registry = ToolRegistry()

    @registry.tool(name="book-room_2", description="Reserve a room.")
    def anything() -> str:
        """Not this."""
        return ""

    assert registry.offered(None)[0]["function"] == {
        "name": "book-room_2", "description": "Reserve a room.",
        "parameters": {"type": "object", "additionalProperties": False, "properties": {}}}
    assert anything() == ""  # the decorator hands the function back unchanged


async def _coroutine(city: str) -> str:
    return city


def _positional(city: str, /) -> str:
    return city


def _star(*cities: str) -> str:
    return ""


def _unhinted(city) -> str:  # type: ignore[no-untyped-def]
    return str(city)


def _no_schema(when: type) -> str:
    return ""


def _good(city: str) -> str:
    return city


def _private(_city: str) -> str:
    return _city


@pytest.mark.parametrize(("function", "options", "says"), [
    (_good, {"name": "has space"}, "1 to 64 letters"),
    (_good, {"name": "x" * 65}, "1 to 64 letters"),
    (_good, {"name": ""}, "1 to 64 letters"),
    (_coroutine, {}, "plain def"),
    (_positional, {}, "by name only"),
    (_star, {}, "by name only"),
    (_unhinted, {}, "type hint"),
    (_no_schema, {}, "JSON Schema"),
    (_good, {"timeout": 0}, "timeout"),
    (_good, {"allow": "admins"}, "allow"),
    (_private, {}, "starting with _"),
    ("not callable", {"name": "x"}, "must be a function"),
], ids=["space", "long", "empty", "async", "positional", "star", "unhinted", "no-schema",
        "timeout", "allow", "private", "not-callable"])
def test_a_function_that_cannot_be_a_tool_is_refused_where_it_is_registered(
        function, options, says) -> None:
    registry = ToolRegistry()
    with pytest.raises(ToolDefinitionError, match=says):
        registry.tool(**options)(function)
    assert len(registry) == 0


def test_two_tools_with_one_name_are_an_error() -> None:
    registry = ToolRegistry()
    registry.tool(name="lookup")(_good)
    registry.tool(_good)  # another name: fine
    assert registry.add(_good).name == "_good"  # the same tool again: nothing changes

    def lookup(city: str) -> str:
        return city

    with pytest.raises(ToolDefinitionError, match="'lookup' is registered already"):
        registry.tool(lookup)
    assert registry.names() == ["lookup", "_good"]


def test_rill_tool_registers_in_the_default_registry(default_registry) -> None:
    @rill.tool
    def weather(city: str) -> str:
        """Today's weather in a city."""
        return "sunny"

    assert default_registry.get("weather") is not None
    assert weather("Oslo") == "sunny"
    assert Rill().tools is default_registry


# --- who is offered what -------------------------------------------------------------------

def _staff_registry() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool
    def public() -> str:
        return "for anyone"

    @registry.tool(allow=lambda user: user == "alice")
    def refund(order_id: int) -> str:
        return f"refunded {order_id}"

    @registry.tool(allow=lambda user: 1 / 0 > 0)
    def broken() -> str:
        return "never"

    return registry


def test_each_user_is_offered_only_the_tools_they_may_call() -> None:
    registry = _staff_registry()
    assert [t["function"]["name"] for t in registry.offered("alice")] == ["public", "refund"]
    assert [t["function"]["name"] for t in registry.offered("bob")] == ["public"]
    assert [t["function"]["name"] for t in registry.offered(None)] == ["public"]


@pytest.mark.parametrize("name", ["refund", "broken", "no_such_tool", "not a name!"])
def test_a_call_the_user_may_not_make_is_refused_as_a_result(name) -> None:
    """A tool the user may not call answers like one that does not exist: no oracle."""
    registry = _staff_registry()
    result = registry.run(ToolCall("call_1", name, '{"order_id": 7}'), "bob", Flask(__name__))
    assert not result.ok
    assert result.content.startswith("No tool named ") and "available" in result.content
    assert "refunded" not in result.content and "!" not in result.content
    alice = registry.run(ToolCall("call_2", "refund", '{"order_id": 7}'), "alice",
                         Flask(__name__))
    assert (alice.ok, alice.content) == (True, "refunded 7")


# --- RILL_TOOLS ---------------------------------------------------------------------------

@pytest.fixture
def tools_module(tmp_path: Path, monkeypatch, default_registry) -> Iterator[str]:
    """A module of ``@rill.tool`` functions, importable by a fresh name."""
    name = f"rill_test_tools_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "from flask import current_app, g  # proxies: looking at them needs a context\n"
        "import rill\n\n"
        "@rill.tool\n"
        "def order_status(order_id: int) -> str:\n"
        "    return 'shipped'\n\n"
        "def helper() -> str:\n"
        "    return 'not a tool'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_rill_tools_modules_are_imported_at_start(tools_module, default_registry) -> None:
    app = create_app({**TEST_CONFIG, "RILL_TOOLS": [tools_module]})
    assert app.extensions["rill"].tools is default_registry
    assert default_registry.get("order_status") is not None

    own = ToolRegistry()  # a second Rill app, with tools of its own
    host = Flask("host")
    host.config.update({**TEST_CONFIG, "RILL_TOOLS": f" {tools_module} ,"})  # str: split
    Rill(host, tools=own)
    assert host.extensions["rill"].tools is own
    assert own.names() == ["order_status"]


def test_a_rill_tools_module_that_does_not_import_stops_the_start() -> None:
    with pytest.raises(ConfigError, match=re.escape(
            "RILL_TOOLS names 'no_such_module_here', which does not import "
            "(ModuleNotFoundError)")):
        create_app({**TEST_CONFIG, "RILL_TOOLS": ["no_such_module_here"]})


# --- the README's example -------------------------------------------------------------------

def test_the_readme_tools_example_works(default_registry) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### Tools", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    exec(compile(code.group(1), "README.md", "exec"), {"__name__": "readme_example"})
    app = Flask(__name__)
    call = ToolCall("call_1", "order_status", '{"order_id": 1042}')
    assert [t["function"]["name"] for t in default_registry.offered(None)] == []
    alice = default_registry.run(call, "alice", app)
    assert (alice.ok, alice.content) == (True, '{"order_id":1042,"status":"shipped"}')
    bob = default_registry.run(call, "bob", app)
    assert (bob.ok, bob.content) == (False, "You have no order 1042.")
    assert not default_registry.run(call, None, app).ok
