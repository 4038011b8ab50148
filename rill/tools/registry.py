"""Where tools are registered: a :class:`ToolRegistry`, and the process's default one.

``@rill.tool`` registers in :data:`DEFAULT`, which every Rill app uses unless it is given
its own (``Rill(app, tools=ToolRegistry())``; that registry's ``@registry.tool`` then
registers in it alone). At start, ``init_app`` imports each module named in ``RILL_TOOLS``
and adds the tools defined there to the app's registry (to :data:`DEFAULT` they are added
by the import itself). So a host that embeds two Rill apps with different tools gives each
its own registry; one app, the common case, needs nothing but the decorator.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, overload

from flask import Flask

from ..config import DEFAULTS, ConfigError
from .run import ToolCall, ToolResult, ToolRun
from .schema import Allow, Tool, ToolDefinitionError, define

F = TypeVar("F", bound=Callable[..., Any])
MARK = "__rill_tool__"  # the attribute ``@tool`` sets on a function: its Tool


class ToolRegistry:
    """Tools by name, in the order they were registered."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    @overload
    def tool(self, function: F, /) -> F: ...

    @overload
    def tool(self, function: None = None, /, *, name: str | None = None,
             description: str | None = None, allow: Allow | None = None,
             timeout: float | None = None) -> Callable[[F], F]: ...

    def tool(self, function: Callable[..., Any] | None = None, /, *, name: str | None = None,
             description: str | None = None, allow: Allow | None = None,
             timeout: float | None = None) -> Any:
        """Decorator: register a function as a tool, as ``@tool`` or ``@tool(name=…)``.

        ``name`` defaults to the function's, ``description`` to its docstring's first
        paragraph; ``allow(user_id)`` (None: anyone) says who may call it; ``timeout`` in
        seconds (None: ``RILL_TOOL_TIMEOUT_SECONDS``). The function is returned unchanged.
        Raises :class:`ToolDefinitionError` (a bad signature, a taken name) right here.
        """
        def register(function: F) -> F:
            setattr(function, MARK, self.add(define(
                function, name=name, description=description, allow=allow, timeout=timeout)))
            return function

        return register(function) if function is not None else register

    def add(self, tool: Tool | Callable[..., Any]) -> Tool:
        """Register ``tool``: a :class:`Tool`, a function ``@tool`` marked, or a plain
        function (as ``@tool`` would). Registering the same tool again does nothing; a
        function of the same module and name replaces its tool (``importlib.reload``).
        Raises :class:`ToolDefinitionError` when another tool has the name."""
        if not isinstance(tool, Tool):
            tool = _marked(tool) or define(tool)
        existing = self._tools.get(tool.name)
        if existing is not None and existing is not tool and not _same_source(existing, tool):
            raise ToolDefinitionError(
                f"a tool named {tool.name!r} is registered already (from "
                f"{_source(existing)}); give one of them another name=")
        self._tools[tool.name] = tool
        return tool

    def load_modules(self, modules: Iterable[str]) -> None:
        """Import each module (``RILL_TOOLS``) and add the ``@tool`` functions in it.

        Raises :class:`~rill.config.ConfigError` naming a module that does not import, and
        :class:`ToolDefinitionError` for a name two modules use.
        """
        if isinstance(modules, str):  # app.config["RILL_TOOLS"] = "a.tools, b.tools"
            modules = [name.strip() for name in modules.split(",") if name.strip()]
        for name in modules:
            try:
                module = importlib.import_module(name)
            except Exception as exc:
                raise ConfigError(f"RILL_TOOLS names {name!r}, which does not import "
                                  f"({type(exc).__name__})") from exc
            for value in list(vars(module).values()):
                tool = _marked(value)
                if tool is not None:
                    self.add(tool)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def offered(self, user: str | None) -> list[dict[str, Any]]:
        """The OpenAI ``tools`` list (chat completions request) of the tools ``user`` may
        call. ``allow`` predicates run here: call it where they can run (the request)."""
        return [tool.spec() for tool in self if tool.permits(user)]

    def start(self, call: ToolCall, user: str | None, app: Flask,
              on_done: Callable[[ToolResult], None] | None = None) -> ToolRun:
        """Start ``call`` for ``user`` in ``app`` (the host Flask app: its app context and
        ``RILL_TOOL_TIMEOUT_SECONDS`` / ``RILL_TOOL_RESULT_MAX_BYTES``); returns at once.
        An unknown tool is refused as a result, as one ``user`` may not call (checked in
        the run, with ``allow``). ``on_done``: see :class:`~rill.tools.run.ToolRun`."""
        tool = self._tools.get(call.name)
        config = app.config
        timeout = (tool.timeout if tool is not None and tool.timeout is not None
                   else config.get("RILL_TOOL_TIMEOUT_SECONDS",
                                   DEFAULTS["RILL_TOOL_TIMEOUT_SECONDS"]))
        max_bytes = config.get("RILL_TOOL_RESULT_MAX_BYTES",
                               DEFAULTS["RILL_TOOL_RESULT_MAX_BYTES"])
        return ToolRun(call, tool, user, app, timeout=float(timeout), max_bytes=int(max_bytes),
                       on_done=on_done)

    def run(self, call: ToolCall, user: str | None, app: Flask) -> ToolResult:
        """:meth:`start` ``call`` and wait for its result (at most its timeout)."""
        return self.start(call, user, app).wait()


def _marked(value: Any) -> Tool | None:
    """The Tool ``@tool`` put on ``value``, if any. Read statically: a module's names
    include proxies (Flask's ``current_app``, ``g``) that raise when looked into."""
    try:
        tool = inspect.getattr_static(value, MARK, None)
    except Exception:
        return None
    return tool if isinstance(tool, Tool) else None


def _source(tool: Tool) -> str:
    function = tool.function
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', '?')}"


def _same_source(old: Tool, new: Tool) -> bool:
    return _source(old) == _source(new) and "?" not in _source(new)


DEFAULT = ToolRegistry()  # ``@rill.tool`` registers here
tool = DEFAULT.tool
