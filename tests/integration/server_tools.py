"""Server-side tools a real server runs between model steps
(``RILL_TOOLS=tests.integration.server_tools``; tests/integration/test_server_tools.py).
Their arguments are the simulator's: ``{"location", "call"}``."""

import os
import time

import rill

SECRET = "sk-tooltestsecret0123456789"  # what a tool's exception must not leak


@rill.tool
def weather(location: str, call: int) -> str:
    """The weather in a city."""
    return f"Sunny in {location} (call {call})"


@rill.tool
def explode(location: str, call: int) -> str:
    """Fails with a secret in its message."""
    raise RuntimeError(f"could not connect with {SECRET}")


@rill.tool(timeout=0.5)
def slow(location: str, call: int) -> str:
    """Outlasts its timeout."""
    time.sleep(30)  # gevent's sleep in the worker
    return "late"


@rill.tool(allow=lambda user: user == "admin")
def admin_only(location: str, call: int) -> str:
    """Only for the admin."""
    return "admin data"


@rill.tool
def dawdle(location: str, call: int) -> str:
    """Takes 3 s (longer than the tests' stall timeout), then notes ``location`` in
    ``$TOOL_MARKS``."""
    time.sleep(3)
    with open(os.environ["TOOL_MARKS"], "a") as marks:
        marks.write(f"{location}\n")
    return f"dawdled in {location}"
