"""A Python function as a tool: its name, description and arguments' JSON Schema.

:func:`define` reads a function's signature and type hints into a pydantic model (one field
per parameter, ``extra="forbid"``), whose JSON Schema is the tool's ``parameters``, and the
first paragraph of its docstring into its description. An argument's own description comes
from ``Annotated[int, Field(description="…")]`` (pydantic's ``Field``), as it would on any
pydantic model. The result follows OpenAI's chat completions ``tools`` entry:
``{"type": "function", "function": {"name", "description", "parameters"}}``.
"""

from __future__ import annotations

import copy
import inspect
import logging
import re
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic
import pydantic.json_schema

log = logging.getLogger(__name__)

NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # OpenAI's rule for a function's name
Allow = Callable[[str | None], bool]  # the request's user id (None: anonymous) -> may call


class ToolDefinitionError(ValueError):
    """A function cannot be a tool (the message says why and what to change), or its name
    is taken. Raised where it is registered, so at import or at start, never mid-answer."""


@dataclass(frozen=True)
class Tool:
    """A registered tool: ``function`` called with keyword arguments validated by
    ``arguments`` (a pydantic model). ``allow`` (None: everyone) says which users may call
    it; ``timeout`` (seconds, None: ``RILL_TOOL_TIMEOUT_SECONDS``) bounds one call."""

    name: str
    description: str
    function: Callable[..., Any]
    arguments: type[pydantic.BaseModel]
    allow: Allow | None = None
    timeout: float | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry for this tool (a new dict each time)."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = copy.deepcopy(self.parameters)
        return {"type": "function", "function": function}

    def permits(self, user: str | None) -> bool:
        """Whether ``user`` may call this tool. A predicate that raises says no (logged,
        without the exception's text)."""
        if self.allow is None:
            return True
        try:
            return bool(self.allow(user))
        except Exception as exc:
            log.warning("tool %s: its allow predicate raised %s; refused", self.name,
                        type(exc).__name__)
            return False


def define(function: Callable[..., Any], *, name: str | None = None,
           description: str | None = None, allow: Allow | None = None,
           timeout: float | None = None) -> Tool:
    """Make ``function`` a :class:`Tool`. Raises :class:`ToolDefinitionError`."""
    if not callable(function):
        raise ToolDefinitionError(f"a tool must be a function, not {type(function).__name__}")
    name = name if name is not None else getattr(function, "__name__", "")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ToolDefinitionError(
            f"tool name {name!r} must be 1 to 64 letters, digits, _ or - (OpenAI's rule)")
    if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
        raise ToolDefinitionError(f"tool {name}: write it as a plain def; Rill runs tools in "
                                  "a greenlet or a thread, not an event loop")
    if allow is not None and not callable(allow):
        raise ToolDefinitionError(f"tool {name}: allow must be a function of the user")
    if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
        raise ToolDefinitionError(f"tool {name}: timeout must be a number of seconds above 0")
    model = _arguments_model(function, name)
    try:
        parameters = model.model_json_schema(schema_generator=_Schema)
    except pydantic.PydanticUserError as exc:  # a type with no JSON Schema
        raise ToolDefinitionError(f"tool {name}: its arguments have no JSON Schema: "
                                  f"{exc}") from None
    parameters.pop("title", None)  # the model's name: the tool's own, said once already
    return Tool(name, description if description is not None else _summary(function),
                function, model, allow, None if timeout is None else float(timeout),
                parameters)


def _arguments_model(function: Callable[..., Any], name: str) -> type[pydantic.BaseModel]:
    """A pydantic model with one field per parameter of ``function``."""
    try:
        hints = typing.get_type_hints(function, include_extras=True)
        signature = inspect.signature(function)
    except (NameError, TypeError, ValueError) as exc:
        raise ToolDefinitionError(f"tool {name}: cannot read its signature: {exc}") from None
    fields: dict[str, Any] = {}
    for parameter in signature.parameters.values():
        where = f"tool {name}, parameter {parameter.name}"
        if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            raise ToolDefinitionError(f"{where}: the model passes arguments by name only "
                                      "(no *args, **kwargs or positional-only parameters)")
        if parameter.name.startswith("_"):
            raise ToolDefinitionError(f"{where}: a name starting with _ cannot be an argument")
        if parameter.name not in hints:
            raise ToolDefinitionError(f"{where}: give it a type hint (its JSON Schema)")
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (hints[parameter.name], default)
    try:
        with warnings.catch_warnings():
            # A parameter named like a BaseModel attribute ("copy", "json") warns; the
            # arguments are read back with dict(model), which such a name cannot shadow.
            warnings.simplefilter("ignore", UserWarning)
            return pydantic.create_model(  # type: ignore[no-any-return, call-overload]
                name, __config__=pydantic.ConfigDict(extra="forbid"), **fields)
    except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError, TypeError,
            NameError) as exc:
        raise ToolDefinitionError(f"tool {name}: pydantic cannot validate its arguments: "
                                  f"{exc}") from None


def _summary(function: Callable[..., Any]) -> str:
    """The first paragraph of ``function``'s docstring, on one line ("" if none)."""
    doc = inspect.getdoc(function) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


class _Schema(pydantic.json_schema.GenerateJsonSchema):
    """Pydantic's JSON Schema without the titles it makes up from field names ("Order Id"
    for ``order_id``): tokens the model reads for nothing. Models keep their names."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False
