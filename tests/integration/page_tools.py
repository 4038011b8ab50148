"""A server-side tool for the chat page's end-to-end test
(``RILL_TOOLS=tests.integration.page_tools``; tests/integration/test_page_tools.py): its
result is markup that must stay text. Arguments as the simulator makes them."""

import rill
from tests.integration.tool_steps import HOSTILE


@rill.tool
def read_note(location: str, call: int) -> str:
    """The note kept for a city."""
    return HOSTILE
