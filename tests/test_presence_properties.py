"""Property test of presence billing (issue 13, item 1): random sequences of
heartbeats and ends from either side and cron runs, at random gaps of up to
150 s (the timeout is 120 s), against a model written from the product rule
(docs/ARCHITECTURE.md, "Billing and presence"). After every step the reading
(status, minutes billed, end reason, when it ended, who went silent) and the
client's wallet equal the model's; at the end every ledger invariant holds.

Plain `def` test (Hypothesis drives it), each step run with run_sync on the
real runtime and real local D1."""

from dataclasses import dataclass
from typing import Any

import local_runtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyodide.ffi import run_sync

from clairvora.db import sql
from market_support import MINUTE_MS, active_reading, assert_ledger_consistent, at, market_pair, now_ms
from support import database

TIMEOUT_MS = 120_000
RATE = 100
FUNDS = 100_000  # never short: this test is about presence

step = st.tuples(
    st.sampled_from(["client", "client", "advisor", "advisor", "cron", "client_end", "advisor_end"]),
    st.integers(1_000, 150_000),
)
steps = st.lists(step, min_size=1, max_size=8)


def begun(accepted: int, at_ms: int, *, inclusive: bool) -> int:
    """Minutes begun by at_ms (minute k begins at accepted + (k-1) minutes)."""
    elapsed = at_ms - accepted
    return elapsed // MINUTE_MS + 1 if inclusive else max(1, -(-elapsed // MINUTE_MS))


@dataclass
class Model:
    accepted: int
    client_seen: int
    advisor_seen: int
    billed: int = 1
    status: str = "active"
    end_reason: str | None = None
    ended_at: int | None = None
    silent_party: str | None = None

    def act(self, who: str, t: int) -> None:
        if self.status != "active":
            return
        first_silent = min(self.client_seen, self.advisor_seen)
        if t - first_silent > TIMEOUT_MS:
            # someone has been gone too long: it ended at their last heartbeat
            self.billed = max(self.billed, begun(self.accepted, first_silent, inclusive=True))
            self.status, self.end_reason, self.ended_at = "ended", "heartbeat_timeout", first_silent
            if self.client_seen == self.advisor_seen:
                self.silent_party = "both"
            else:
                self.silent_party = "client" if self.client_seen < self.advisor_seen else "advisor"
            return
        # the client pays for what it was seen in: its own request now, else its last heartbeat
        client_at = t if who.startswith("client") else min(t, self.client_seen)
        if who == "client":
            self.billed = max(self.billed, begun(self.accepted, t, inclusive=True))
            self.client_seen = t
        elif who == "advisor":
            self.billed = max(self.billed, begun(self.accepted, client_at, inclusive=True))
            self.advisor_seen = t
        elif who in ("client_end", "advisor_end"):
            due = min(begun(self.accepted, t, inclusive=False), begun(self.accepted, client_at, inclusive=True))
            self.billed = max(self.billed, due)
            self.status, self.ended_at = "ended", t
            self.end_reason = "client_ended" if who == "client_end" else "advisor_ended"


async def _setup(t: int) -> dict[str, Any]:
    client, client_id, advisor, advisor_id = await market_pair(rate=RATE, funds=FUNDS)
    reading = await active_reading(client, advisor, advisor_id, t)
    return {"client": client, "client_id": client_id, "advisor": advisor, "rid": int(reading["id"])}


async def _state(ctx: dict[str, Any]) -> tuple[Any, ...]:
    row = await database().first(
        sql(
            """SELECT r.status, r.billed_minutes, r.end_reason, r.ended_at_ms, r.silent_party,
                      (SELECT balance_cents FROM accounts WHERE owner_user_id = r.client_id
                          AND kind = 'client_wallet') AS wallet
               FROM readings r WHERE r.id = ?""",
            ctx["rid"],
        )
    )
    assert row is not None
    return (
        row["status"],
        row["billed_minutes"],
        row["end_reason"],
        row["ended_at_ms"],
        row["silent_party"],
        row["wallet"],
    )


async def _step(ctx: dict[str, Any], m: Model, who: str, t: int) -> None:
    path = f"/v1/readings/{ctx['rid']}"
    if who == "cron":
        # earlier tests may have left stale readings ahead of this one: run until it settles (if it should)
        for _ in range(30):
            await local_runtime.dispatchScheduled("* * * * *", t)
            if m.status == "active" or (await _state(ctx))[0] == "ended":
                break
        return
    caller = ctx["client"] if who.startswith("client") else ctx["advisor"]
    action = "/end" if who.endswith("_end") else "/heartbeat"
    r = await caller.post(path + action, headers=at(t))
    assert r.status == 200, r.text


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(steps)
def test_random_presence_schedules_bill_as_the_model_says(schedule):
    t = now_ms()
    ctx = run_sync(_setup(t))
    m = Model(accepted=t, client_seen=t, advisor_seen=t)
    for who, gap in schedule:
        t += gap
        m.act("cron" if who == "cron" else who, t)
        run_sync(_step(ctx, m, who, t))
        want = (m.status, m.billed, m.end_reason, m.ended_at, m.silent_party, FUNDS - RATE * m.billed)
        got = run_sync(_state(ctx))
        assert got == want, (schedule, who, t - m.accepted, got, want)
    run_sync(assert_ledger_consistent())
