"""Server-side tools: functions of the host app the model may call (OpenAI function calling).

Register with ``@rill.tool`` (this package's :func:`tool`); Rill offers each user the tools
they may call and runs the calls the model makes::

    registry = state().tools                   # the app's ToolRegistry
    request_tools = registry.offered(user)     # OpenAI ``tools`` for the upstream request
    run = registry.start(ToolCall(id, name, arguments), user, app, on_done=None)  # at once
    result = run.wait()       # ToolResult, by the deadline at the latest (or: on_done(result))
    run.cancel()              # from another greenlet or thread: stop it now
    result.to_dict()          # {"id", "name", "ok", "content", "elapsed_ms"}: the event's data
    result.message()          # {"role": "tool", "tool_call_id", "content"}: the next request's

See :mod:`.schema` (a function's JSON Schema), :mod:`.registry` (where tools live, and
``RILL_TOOLS``) and :mod:`.run` (how a call runs, ends and fails).
"""

from .registry import DEFAULT, ToolRegistry, tool
from .run import ToolCall, ToolFailure, ToolResult, ToolRun
from .schema import Tool, ToolDefinitionError

__all__ = ["DEFAULT", "Tool", "ToolCall", "ToolDefinitionError", "ToolFailure",
           "ToolRegistry", "ToolResult", "ToolRun", "tool"]
