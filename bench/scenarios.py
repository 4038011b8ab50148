"""The benchmark's scenarios: how many streams, how fast they start, what the upstream does."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    """``streams`` started evenly over ``ramp`` s; the simulator waits ``ttft_ms`` before the
    first token and ``itl_ms`` between tokens, ``tokens`` in all. With ``leave_after`` each
    client closes its connection after that many deltas. Streams not done by ``deadline`` s
    count as incomplete. With ``follow`` each stream is read by a second tab too, from its
    start event on (``GET /api/chat/<id>/events``, on the system's last instance)."""

    name: str
    streams: int
    ramp: float
    tokens: int
    ttft_ms: int = 0
    itl_ms: int = 0
    leave_after: int = 0
    deadline: float = 120.0
    about: str = ""
    follow: bool = False

    @property
    def model(self) -> str:
        return f"sim?tokens={self.tokens}&ttft_ms={self.ttft_ms}&itl_ms={self.itl_ms}"

    def loadgen_command(self, loadgen: list[str], url: str,
                        follow_url: str | None = None) -> list[str]:
        """``follow_url``: the base URL second tabs read from (``url`` when ``None``)."""
        return [*loadgen, "-url", f"{url}/api/chat", "-n", str(self.streams),
                "-ramp", str(self.ramp), "-model", self.model, "-tag", self.name,
                "-tokens", str(self.tokens), "-leave-after", str(self.leave_after),
                "-deadline", str(self.deadline),
                *(["-follow", follow_url or url] if self.follow else [])]


FULL = {s.name: s for s in (
    Scenario("throughput", 100, 0, 2000, deadline=120,
             about="100 streams at once, no upstream delay, 2,000 tokens each"),
    Scenario("disconnect", 500, 2, 200, itl_ms=50, leave_after=5, deadline=30,
             about="500 streams over 2 s at 20 tokens/s; each client leaves after 5 deltas"),
    Scenario("flowing", 2000, 5, 100, itl_ms=100, deadline=75,
             about="2,000 streams over 5 s at 10 tokens/s, 100 tokens"),
    Scenario("held", 8000, 10, 30, ttft_ms=500, itl_ms=1000, deadline=90,
             about="8,000 streams over 10 s, TTFT 500 ms, 1 token/s, 30 tokens"),
    Scenario("tabs", 1000, 5, 100, itl_ms=100, deadline=75, follow=True,
             about="1,000 streams over 5 s at 10 tokens/s, 100 tokens, each read by a second "
                   "tab too (`rill-redis-2i`: on the other instance, through Redis)"),
)}

# Not in the default run: an unsaturated load, where CPU per token compares like for like
# (a saturated worker spends all of its wall time, whatever each token costs).
EXTRA = {s.name: s for s in (
    Scenario("steady", 500, 2, 100, itl_ms=100, deadline=40,
             about="500 streams over 2 s at 10 tokens/s, 100 tokens"),
    Scenario("starts", 2000, 10, 1, deadline=30,
             about="2,000 one-token streams over 10 s: the cost of starting a stream"),
)}

SMOKE = {s.name: s for s in (
    Scenario("throughput", 10, 0, 200, deadline=20, about="10 streams, 200 tokens"),
    Scenario("disconnect", 20, 0.2, 100, itl_ms=20, leave_after=5, deadline=10,
             about="20 streams leaving after 5 deltas"),
    Scenario("flowing", 50, 0.5, 10, itl_ms=50, deadline=20, about="50 streams, 10 tokens"),
    Scenario("held", 100, 0.5, 3, ttft_ms=200, itl_ms=300, deadline=20,
             about="100 streams, 3 slow tokens"),
    Scenario("tabs", 20, 0.2, 10, itl_ms=50, deadline=20, follow=True,
             about="20 streams, 10 tokens, each read by a second tab too"),
)}
