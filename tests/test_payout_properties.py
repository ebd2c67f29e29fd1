"""Property test: random sequences of earnings (some past the hold), clearance
runs, payouts on request (paid, failed by PayPal, refused, answer lost),
webhook deliveries and redeliveries, the cron's resends and PayPal returns,
against a model; after EVERY step the advisor's money adds up (pending +
cleared + in transit + paid = earned), pending is what has not aged or not
been cleared, and every ledger invariant holds (reconcile's payout checks included).

Plain `def` test (Hypothesis drives it), each step run with run_sync on the
real runtime, real local D1 and the PayPal stand-in."""

from typing import Any

import local_runtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyodide.ffi import run_sync

from clairvora import reconcile
from clairvora.db import sql
from payout_support import (
    DAY_MS,
    balances,
    clear,
    deliver_webhooks,
    earn,
    now_ms,
    receiver,
    request_payout,
    resume,
    set_method,
)
from support import database
from world import actor, invariant_violations, make_advisor

HOLD_DAYS = 7

earning = st.tuples(st.just("earn"), st.integers(5, 25), st.sampled_from([0, 3, 8, 12]))
clearing = st.tuples(st.just("clear"))
payout = st.tuples(
    st.just("payout"), st.sampled_from(["all", "half"]), st.sampled_from(["", "", "fail", "invalid", "timeout"])
)
delivering = st.tuples(st.just("deliver"))
resuming = st.tuples(st.just("resume"))
returning = st.tuples(st.just("return"), st.integers(0, 5))
steps = st.lists(st.one_of(earning, clearing, payout, delivering, resuming, returning), min_size=3, max_size=9)


class Model:
    def __init__(self) -> None:
        self.earnings: list[tuple[int, int]] = []  # (cents, earned at)
        self.cleared_total = 0  # what clearance runs have moved so far
        self.payout_ids: list[str] = []

    @property
    def earned(self) -> int:
        return sum(c for c, _t in self.earnings)

    def aged(self, at_ms: int) -> int:
        return sum(c for c, t in self.earnings if t <= at_ms - HOLD_DAYS * DAY_MS)


async def _money(advisor_id: int) -> dict[str, int]:
    row = await database().first(
        sql(
            """SELECT coalesce(sum(CASE WHEN status IN ('requested', 'sent', 'unclaimed') THEN amount_cents END), 0) AS open,
                      coalesce(sum(CASE WHEN status = 'succeeded' THEN amount_cents END), 0) AS paid
               FROM payouts WHERE advisor_id = ?""",
            advisor_id,
        )
    )
    assert row is not None
    return {**(await balances(advisor_id)), "open": int(row["open"]), "paid": int(row["paid"])}


async def _step(a: Any, m: Model, op: tuple) -> None:
    kind = op[0]
    if kind == "earn":
        _k, minutes, age_days = op
        at = now_ms() - age_days * DAY_MS - 60_000
        m.earnings.append((await earn(a.id, minutes, at), at))
    elif kind == "clear":
        result = await clear(a.id, now_ms())
        assert result["cleared_cents"] == m.aged(now_ms()) - m.cleared_total, (result, m.earnings)
        m.cleared_total += result["cleared_cents"]
    elif kind == "payout":
        _k, share, tag = op
        assert (await set_method(a, receiver(tag))).status == 200
        cleared = (await balances(a.id))["cleared"]
        amount = cleared if share == "all" else cleared // 2
        r = await request_payout(a, {"amount_cents": amount} if amount > 0 else {})
        if amount < 1000:
            assert r.status == 422 and r.json()["code"] == "payout_below_minimum", r.text
            return
        expected = {"": 201, "fail": 201, "invalid": 502, "timeout": 202}[tag]
        assert r.status == expected, r.text
        m.payout_ids.append(r.json()["id"] if r.status < 300 else r.json()["payout"]["id"])
    elif kind == "deliver":
        for _delivery, r in await deliver_webhooks():
            assert r.status == 200, r.text
    elif kind == "resume":
        for pid in m.payout_ids:
            row = await database().first(sql("SELECT status FROM payouts WHERE id = ?", int(pid)))
            if row["status"] in ("requested", "sent"):
                await resume(pid, now_ms() + 2 * 3600_000)
    elif kind == "return":
        if m.payout_ids:
            local_runtime.paypalControl.returnItem(m.payout_ids[op[1] % len(m.payout_ids)])


async def _check(a: Any, m: Model) -> None:
    money = await _money(a.id)
    assert money["pending"] + money["cleared"] + money["open"] + money["paid"] == m.earned, (money, m.earned)
    assert money["pending"] == m.earned - m.cleared_total, (money, m.cleared_total)
    assert money["pending"] >= 0 and money["cleared"] >= 0
    violations = {k: v for k, v in (await invariant_violations()).items() if v}
    assert not violations, violations
    failing = [c for c in (await reconcile.check(database()))["checks"] if not c["ok"]]
    assert not failing, failing


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(steps)
def test_random_payout_sequences_keep_the_books(ops):
    async def run() -> None:
        a = await make_advisor(await actor("pprop"))
        m = Model()
        for op in ops:
            await _step(a, m, op)
            await _check(a, m)
        await deliver_webhooks()

    run_sync(run())
