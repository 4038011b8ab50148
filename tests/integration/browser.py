"""Helpers of the chat page's tests (the ``browser`` and ``page`` fixtures are in conftest)."""

from __future__ import annotations

import pytest

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


def answer_text(page) -> str:
    return page.locator(".turn-assistant .turn-text").last.inner_text()


def send(page, text: str) -> None:
    page.fill("#prompt", text)
    page.keyboard.press("Enter")
