"""What Rill hands the ``openai`` SDK from the environment and the settings: the SDK's own
variables, checked before they can reach a request head, and the field that carries the
length cap."""

from __future__ import annotations

import re
from collections.abc import Mapping

import httpx2

from ..config import ConfigError


def max_tokens_param(setting: str, base_url: str) -> str:
    """The request field that caps the answer's length: ``setting`` unless it is ``auto``,
    which is ``max_completion_tokens`` for OpenAI's own API (its reasoning models refuse
    ``max_tokens``, deprecated there) and ``max_tokens`` elsewhere (Ollama reads only that;
    vLLM, llama.cpp and LiteLLM read it too). OpenAI API reference, "Create chat
    completion"."""
    if setting != "auto":
        return setting
    return ("max_completion_tokens" if httpx2.URL(base_url).host == "api.openai.com"
            else "max_tokens")


# The environment variables the SDK turns into the request line or header values (with
# OPENAI_CUSTOM_HEADERS, checked apart).
SDK_VARIABLES = {"OPENAI_API_KEY": "api_key", "OPENAI_ORG_ID": "organization",
                 "OPENAI_PROJECT_ID": "project", "OPENAI_BASE_URL": "base_url"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def sdk_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The SDK's settings from ``SDK_VARIABLES`` that are set (by argument name), stripped
    of surrounding whitespace (a key file written by ``echo`` ends in a newline).

    Raises :class:`~rill.config.ConfigError` naming the variable, never showing its value,
    for one that is only whitespace, or that still holds a control character (CR or LF
    would end the header line and start another, RFC 9110 section 5.5) or, in a header
    value, anything but ASCII.
    """
    settings = {}
    for name, argument in SDK_VARIABLES.items():
        if not (raw := environ.get(name)):
            continue
        value = raw.strip()
        if not value:
            raise ConfigError(f"{name} is set but blank; unset it or give it a value.")
        _check(name, value, ascii_only=argument != "base_url")
        settings[argument] = value
    # The SDK reads this one itself: `Name: value` lines, each name and value stripped.
    for line in environ.get("OPENAI_CUSTOM_HEADERS", "").split("\n"):
        for part in line.partition(":")[::2]:
            _check("OPENAI_CUSTOM_HEADERS", part.strip(), ascii_only=True)
    return settings


def _check(name: str, value: str, ascii_only: bool) -> None:
    if _CONTROL.search(value) or (ascii_only and not value.isascii()):
        raise ConfigError(f"{name} holds a line break, another control character or a "
                          "non-ASCII character (its value is not shown); set it again as "
                          "one line.")
