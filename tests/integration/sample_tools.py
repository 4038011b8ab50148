"""Tools a real server loads through ``RILL_TOOLS=tests.integration.sample_tools``
(tests/integration/test_tool_startup.py)."""

from typing import Literal

import rill


@rill.tool
def order_status(order_id: int) -> str:
    """Look up an order's status."""
    return "shipped"


@rill.tool(allow=lambda user: user is not None, timeout=5)
def refund(order_id: int, reason: Literal["late", "broken"]) -> str:
    """Refund an order."""
    return "refunded"
