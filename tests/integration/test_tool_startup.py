"""A real gunicorn worker loads the tools RILL_TOOLS names when it starts, or refuses to start.

Tool calls in a stream are covered where the generation loop runs them; here only the start.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import run_rill

pytestmark = pytest.mark.integration


def test_the_worker_registers_the_tools_of_rill_tools_modules_at_start() -> None:
    with run_rill({"RILL_TOOLS": "tests.integration.sample_tools"}, "tools") as server:
        lines = [json.loads(line) for line in server.log().splitlines()
                 if line.startswith("{")]
    assert {"logger": "rill.extension", "message": "tools: order_status, refund"}.items() \
        <= next(line for line in lines if line["logger"] == "rill.extension").items()


def test_a_worker_whose_rill_tools_module_does_not_import_does_not_start() -> None:
    with pytest.raises(RuntimeError, match="the server exited early") as failed, \
            run_rill({"RILL_TOOLS": "tests.integration.no_such_tools"}, "tools-missing"):
        pass
    assert ("RILL_TOOLS names 'tests.integration.no_such_tools', which does not import "
            "(ModuleNotFoundError)") in str(failed.value)
