"""A generation's ending: whatever the metrics or the log raise, ``on_finish`` runs and the
stream leaves ``rill_active_streams`` (issue 14, item 5: a slot was never released)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from rill import metrics
from rill.config import DEFAULTS
from rill.generation import Generation, Limits
from rill.hub import Hub, create


@pytest.fixture
def hub() -> Iterator[Hub]:
    yield create(DEFAULTS)


def generation(hub: Hub, finished: list[str]) -> Generation:
    stream = secrets.token_hex(8)
    hub.open(stream, None)
    return Generation(hub, stream, {"stream_id": stream, "model": "m"}, Limits(60, 60, 60),
                      on_finish=lambda: finished.append(stream))


def active() -> float:
    return metrics.ACTIVE._value.get()


def done(usage: object) -> tuple[str, dict[str, object]]:
    return ("done", {"finish_reason": "stop", "usage": usage})


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": 1, "completion_tokens": -5, "total_tokens": -4},
    {"completion_tokens": 2.5}, {"completion_tokens": True}, {"completion_tokens": "3"}])
def test_odd_usage_counts_are_not_counted_and_raise_nothing(hub, usage) -> None:
    finished: list[str] = []
    before, tokens = active(), metrics.TOKENS._value.get()
    gen = generation(hub, finished)
    gen.open()
    gen.take([("delta", {"content": "a"}), ("delta", {"content": "b"}), done(usage)])
    gen.close()
    assert finished and active() == before
    assert metrics.TOKENS._value.get() - tokens == 2  # the deltas relayed, not the claim


@pytest.mark.parametrize("broken", ["STREAMS", "TOKENS", "DURATION", "log"])
def test_on_finish_runs_and_the_gauge_drops_whatever_the_accounting_raises(
        hub, monkeypatch, broken) -> None:
    class Boom:
        def __getattr__(self, name: str) -> object:
            raise RuntimeError(f"{broken} broke")

    monkeypatch.setattr("rill.generation.log" if broken == "log" else f"rill.metrics.{broken}",
                        Boom())
    finished: list[str] = []
    before = active()
    gen = generation(hub, finished)
    gen.open()
    assert active() == before + 1
    gen.take([("delta", {"content": "a"}), done(None)])
    gen.close()
    gen.close()  # once
    assert len(finished) == 1 and active() == before


def call(index: int, arguments: str, head: str | None = None) -> tuple[str, dict[str, object]]:
    return ("tool_call", {"index": index, "id": head and f"call_{head}", "name": head,
                          "arguments": arguments})


def test_fragments_of_one_call_read_together_merge_into_one_event_keeping_its_head(
        hub) -> None:
    """As runs of tokens merge: a call's first event keeps its id and name, later ones stay
    null; fragments of another call, or text between, are not merged across."""
    gen = generation(hub, [])
    gen.open()
    gen.take([("delta", {"content": "Let me "}), ("delta", {"content": "look."}),
              call(0, "", "f"), call(0, '{"a"'), call(0, ":1"), call(1, "", "g"), call(0, "}")])
    gen.take([call(1, "{"), call(1, "}"), call(0, " ")])
    gen.take([done(None)])
    records = hub.read(gen.stream_id, 0, 0, 100)
    assert [(kind, payload) for _, kind, payload in records] == [
        ("delta", {"content": "Let me look."}),
        call(0, '{"a":1', "f"), call(1, "", "g"), call(0, "}"),
        call(1, "{}"), call(0, " "), done(None)]
    assert [id_ for id_, _, _ in records] == list(range(1, 8))
    gen.close()
