"""Helpers of the chat page's tests (the ``browser`` and ``page`` fixtures are in conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

# axe-core, vendored for the tests only by scripts/vendor-frontend; inject it with
# context.add_init_script(path=str(AXE)) (init scripts are not subject to the page's CSP).
AXE = Path(__file__).resolve().parents[1] / "vendor" / "axe.min.js"


def answer_text(page) -> str:
    return page.locator(".turn-assistant .turn-text").last.inner_text()


def send(page, text: str) -> None:
    page.fill("#prompt", text)
    page.keyboard.press("Enter")


def violations(page) -> list[str]:
    """axe's violations of the page as it is now: "rule (impact): targets: summary"."""
    found = page.evaluate("""async () => {
        const result = await axe.run(document, { resultTypes: ["violations"] });
        return result.violations.map((v) => `${v.id} (${v.impact}): ` + v.nodes.map(
            (n) => `${JSON.stringify(n.target)} ${n.failureSummary}`).join(" | "));
    }""")
    return list(found)
