"""Earnings clearance: pending earnings older than the hold move to cleared
earnings, exactly once whatever runs race, never more than pending holds
(refunds and clawbacks meanwhile), each entry looked at once."""

import asyncio

from clairvora import clearance, payout_cron
from clairvora.db import sql
from market_support import at
from money_support import charge_minute_statements, start_reading
from payout_support import DAY_MS, balances, clear, earn, now_ms, settings
from support import Client, database, token_for
from world import actor, assert_books_clean, credit, make_admin, make_advisor

HOLD_MS = 7 * DAY_MS


async def _advisor():
    return await make_advisor(await actor("clr"))


async def _clearances(advisor_id: int) -> list[dict]:
    rows = await database().all(
        sql("SELECT * FROM earnings_clearances WHERE advisor_id = ? ORDER BY pending_sequence", advisor_id)
    )
    return rows.rows


async def test_earnings_clear_only_after_the_hold():
    a = await _advisor()
    t0 = now_ms() - 10 * DAY_MS
    earned = await earn(a.id, 12, t0)
    assert (await balances(a.id))["pending"] == earned
    assert (await clear(a.id, t0 + HOLD_MS - 60_000))["cleared_cents"] == 0
    assert (await balances(a.id))["cleared"] == 0
    assert (await clear(a.id, t0 + HOLD_MS + 60_000))["cleared_cents"] == earned
    b = await balances(a.id)
    assert (b["pending"], b["cleared"]) == (0, earned)
    (row,) = await _clearances(a.id)
    assert row["amount_cents"] == earned and row["cutoff_ms"] == t0 + 60_000
    # A configured hold of 0 days clears at once.
    t1 = now_ms()
    more = await earn(a.id, 3, t1)
    assert (await clear(a.id, t1 + 1, EARNINGS_HOLD_DAYS="0"))["cleared_cents"] == more


async def test_only_the_aged_part_clears_and_the_rest_later():
    a = await _advisor()
    t0 = now_ms() - 20 * DAY_MS
    first = await earn(a.id, 10, t0)
    second = await earn(a.id, 4, t0 + 3 * DAY_MS)
    assert (await clear(a.id, t0 + HOLD_MS + DAY_MS))["cleared_cents"] == first
    assert (await balances(a.id))["pending"] == second
    assert (await clear(a.id, t0 + HOLD_MS + 2 * DAY_MS))["cleared_cents"] == 0
    assert (await clear(a.id, t0 + 3 * DAY_MS + HOLD_MS + 1))["cleared_cents"] == second
    assert (await balances(a.id))["cleared"] == first + second


async def test_concurrent_and_repeated_runs_clear_exactly_once():
    a = await _advisor()
    t0 = now_ms() - 9 * DAY_MS
    earned = await earn(a.id, 15, t0)
    runs = await asyncio.gather(*(clear(a.id, now_ms()) for _ in range(4)))
    assert sum(r["cleared_cents"] for r in runs) == earned
    assert (await clear(a.id, now_ms()))["cleared_cents"] == 0
    assert len(await _clearances(a.id)) == 1
    await assert_books_clean()


async def test_a_refund_meanwhile_is_not_cleared_and_pending_never_goes_below_zero():
    a = await _advisor()
    admin = await make_admin(await actor("clradm"))
    now_s = now_ms() // 1000
    # A token valid at the refund's injected time, eight days ago (lifetimes are capped at ten).
    admin.client = Client(await token_for(admin.sub, iat=now_s - 8 * 86400, nbf=now_s - 8 * 86400, exp=now_s + 86400))
    t0 = now_ms() - 9 * DAY_MS - DAY_MS // 2
    client = await actor("clrc")
    await credit(client.id, 2000)
    db = database()
    reading = await start_reading(db, client.id, a.id, 100, now_ms=t0)
    for minute in range(1, 11):
        await db.batch(charge_minute_statements(reading, minute, t0))
    earned = 10 * reading["advisor_part"]
    # Two days later half of it is refunded: the advisor gives back its share.
    r = await admin.client.post(
        f"/v1/admin/readings/{reading['id']}/refund",
        json={"amount_cents": 500, "reason": "half"},
        headers={"idempotency-key": f"clr{reading['id']}", **at(t0 + 2 * DAY_MS)},
    )
    assert r.status == 201, r.text
    taken = r.json()["refund"]["advisor_cents"]
    # The charges have aged, the refund has not: what clears is what pending still holds.
    assert (await clear(a.id, t0 + HOLD_MS + 60_000))["cleared_cents"] == earned - taken
    assert (await balances(a.id))["pending"] == 0
    # Once the refund ages too, nothing more: it was never cleared.
    assert (await clear(a.id, t0 + 2 * DAY_MS + HOLD_MS + 60_000))["cleared_cents"] == 0
    # A refund now cannot take cleared earnings back through pending: pending stays >= 0.
    r = await admin.client.post(
        f"/v1/admin/readings/{reading['id']}/refund",
        json={"amount_cents": 100, "reason": "more"},
        headers={"idempotency-key": f"clr2{reading['id']}"},
    )
    assert r.status == 409 and r.json()["code"] == "advisor_balance_insufficient", r.text
    b = await balances(a.id)
    assert (b["pending"], b["cleared"]) == (0, earned - taken)
    await assert_books_clean(admin)


async def test_a_plan_made_stale_by_a_new_entry_is_refused_whole():
    a = await _advisor()
    t0 = now_ms() - 9 * DAY_MS
    earned = await earn(a.id, 10, t0)
    db, s = database(), settings()
    (plan,) = await clearance.plans(db, s, [a.id], now_ms())
    assert clearance.clearable(plan) == earned
    more = await earn(a.id, 2, now_ms())  # the account moves after the plan
    assert await clearance.clear_advisor(db, s, plan, now_ms()) == 0
    assert await _clearances(a.id) == [] and (await balances(a.id))["cleared"] == 0
    assert (await clear(a.id, now_ms()))["cleared_cents"] == earned
    assert (await balances(a.id))["pending"] == more


async def test_each_entry_is_looked_at_once():
    a = await _advisor()
    t0 = now_ms() - 30 * DAY_MS
    await earn(a.id, 40, t0)
    db = database()
    before = db.counters.rows_read
    (plan,) = await clearance.plans(db, settings(), [a.id], t0 + HOLD_MS + 1)
    first_look = db.counters.rows_read - before
    assert first_look >= 40, first_look  # the 40 aged entries
    await clearance.clear_advisor(db, settings(), plan, t0 + HOLD_MS + 1)
    await earn(a.id, 2, t0 + 10 * DAY_MS)
    before = db.counters.rows_read
    (plan,) = await clearance.plans(db, settings(), [a.id], t0 + 10 * DAY_MS + HOLD_MS + 1)
    second_look = db.counters.rows_read - before
    assert second_look < 20 and clearance.clearable(plan) == 2 * 70, (second_look, plan)


async def test_the_cron_job_reaches_every_due_advisor_and_arms_the_automatic_payout():
    a = await _advisor()
    t0 = now_ms() - 9 * DAY_MS
    earned = await earn(a.id, 80, t0)  # 5600 cents: above PAYOUT_AUTO_MIN_CENTS (5000)
    s = settings()
    later = now_ms() + 60_000
    for _run in range(200):
        await clearance.clear_earnings(database(), s, later, 45)
        if (await balances(a.id))["cleared"] == earned:
            break
    else:
        raise AssertionError("the job never reached the advisor")
    db = database()
    state = await db.first(sql("SELECT * FROM advisor_payout_state WHERE advisor_id = ?", a.id))
    assert state["auto_payout_due_at_ms"] is not None and state["next_clearance_at_ms"] > later
    # Due, but no receiver yet: nothing is made, and it waits for the next clearance to arm it again.
    assert await payout_cron.auto_payout_for(db, s, a.id, later) is False
    state = await db.first(sql("SELECT auto_payout_due_at_ms FROM advisor_payout_state WHERE advisor_id = ?", a.id))
    assert state["auto_payout_due_at_ms"] is None and (await balances(a.id))["cleared"] == earned
