"""Reading streamed ``delta.tool_calls`` fragments (OpenAI API reference, "Chat completions:
the chat completion chunk object") into Rill's ``tool_call`` events.

Event: ``("tool_call", {"index", "id", "name", "arguments"})``. ``index`` numbers the calls of
one answer from 0 in the order they first appear (Rill's own number, whatever the upstream's
``index`` was); ``arguments`` is the fragment of the call's JSON arguments that came now. The
first event of each call carries its ``id`` and ``name`` (strings); every later event of the
same call has ``id`` and ``name`` null and a non-empty ``arguments``. Joining the
``arguments`` of one ``index`` in order gives the call's arguments.

Which call a fragment belongs to, for the shapes servers send:

- with ``index`` (OpenAI, vLLM, llama.cpp, LiteLLM, SGLang): the call first seen with that
  index; the ``id``, ``name`` and ``type`` that later fragments repeat (vLLM, SGLang), send
  empty (``""``) or null (LiteLLM) are ignored;
- without ``index`` (Gemini's OpenAI compatibility, which sends whole calls): the call with
  that ``id``, a new one for a new ``id``; with neither, a new call if it has a ``name``,
  else the call of the fragment before.

Refused (the reason is returned; the parser ends the stream ``upstream_malformed``): a
fragment that is not an object, an ``index`` that is not a non-negative integer, an ``id``,
``name`` or ``arguments`` that is not a string or null, a ``function`` that is not an
object, a ``type`` other than ``function``, a new call without a ``name``, and an ``id``
outside ``rill.chat_tools.TOOL_CALL_ID`` (the client could not send it back). A new call
without an ``id`` (some vLLM versions) gets ``call_rill_<index>``. An answer of several model
steps (server-side tools, :mod:`rill.steps`) numbers its calls on across them: a step's
reader starts at ``first``, the number of calls before it.
"""

from __future__ import annotations

from typing import Any

from ..chat_tools import TOOL_CALL_ID
from . import Event


class ToolCallReader:
    """The tool calls of one answer, read a ``delta.tool_calls`` list at a time."""

    __slots__ = ("_by_id", "_by_index", "_last", "count", "first")

    def __init__(self, first: int = 0) -> None:
        self.first = first  # Rill's index of this reader's first call
        self.count = 0  # calls seen
        self._by_index: dict[int, int] = {}
        self._by_id: dict[str, int] = {}
        self._last: int | None = None

    def read(self, fragments: Any, events: list[Event]) -> str | None:
        """Append the ``tool_call`` events of one ``delta.tool_calls`` value to ``events``;
        return what is wrong with it (for the log), else ``None``."""
        if type(fragments) is not list:
            return f"`delta.tool_calls` is a {type(fragments).__name__}, not a list"
        for fragment in fragments:
            if problem := self._read(fragment, events):
                return problem
        return None

    def _read(self, fragment: Any, events: list[Event]) -> str | None:
        if type(fragment) is not dict:
            return "a tool call fragment is not an object"
        index, call_id, kind = fragment.get("index"), fragment.get("id"), fragment.get("type")
        function = fragment.get("function")
        if index is not None and (type(index) is not int or index < 0):
            return "a tool call's `index` is not a non-negative integer"
        if function is not None and type(function) is not dict:
            return "a tool call's `function` is not an object"
        name = function.get("name") if function else None
        arguments = function.get("arguments") if function else None
        if not all(v is None or type(v) is str for v in (call_id, kind, name, arguments)):
            return "a tool call's `id`, `type`, `name` or `arguments` is not a string"
        if kind not in (None, "", "function"):
            return f"a tool call of type {kind!r:.40}"
        number = self._number(index, call_id, name)
        if number is not None:
            if arguments:
                events.append(("tool_call", {"index": number, "id": None, "name": None,
                                             "arguments": arguments}))
            self._last = number
            return None
        if not name:
            return "a tool call's first fragment has no function name"
        number = self.first + self.count
        call_id = call_id or f"call_rill_{number}"
        if not TOOL_CALL_ID.fullmatch(call_id):
            return "a tool call's id is not 1 to 256 printable ASCII characters"
        self.count += 1
        if index is not None:
            self._by_index[index] = number
        self._by_id.setdefault(call_id, number)
        self._last = number
        events.append(("tool_call", {"index": number, "id": call_id, "name": name,
                                     "arguments": arguments or ""}))
        return None

    def _number(self, index: int | None, call_id: str | None, name: str | None) -> int | None:
        """The call a fragment continues, or ``None`` for a new call."""
        if index is not None:
            return self._by_index.get(index)
        if call_id:
            return self._by_id.get(call_id)
        return None if name else self._last
