"""Presence: each participant's heartbeats are their own (issue 13, item 1).

The client pays. An advisor who keeps sending heartbeats must not keep billing
a client whose app went quiet: an advisor's heartbeat or end bills only the
minutes begun by the client's own last heartbeat, and once the client has been
silent longer than HEARTBEAT_TIMEOUT_SECONDS (120 s in the test configuration)
nothing more is billed and the reading ends at the client's last heartbeat,
whoever notices (advisor, cron, the client coming back late). An advisor silent
past the timeout ends the reading the same way, at the advisor's last
heartbeat: the client pays nothing begun after the advisor had been gone that
long. `silent_party` says who went silent.

The SQL enforces it (migration 0040's reading_charges_presence trigger and the
conditional statements of billing.py), so these tests also send the charge
statements straight to D1."""

import asyncio
import random

import local_runtime
import pytest

from clairvora import billing
from clairvora.db import TriggerAbort, sql
from market_support import (
    MINUTE_MS,
    active_reading,
    assert_ledger_consistent,
    at,
    market_pair,
    now_ms,
    reading_row,
    wallet_cents,
)
from support import database

TIMEOUT_MS = 120_000  # HEARTBEAT_TIMEOUT_SECONDS in the test configuration


async def _beat(who, rid, t_ms: int) -> dict:
    r = await who.post(f"/v1/readings/{rid}/heartbeat", headers=at(t_ms))
    assert r.status == 200, r.text
    return r.json()


async def test_an_advisor_heartbeating_alone_never_bills_a_silent_client():
    """The money bug: the client closed the app after one heartbeat; the
    advisor's app keeps beating every 30 s for ten minutes."""
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=2000)
    rid = (await active_reading(client, advisor, advisor_id, t))["id"]
    await _beat(client, rid, t + 20_000)  # the client's last sign of life
    seen = [(k * 30, (await _beat(advisor, rid, t + k * 30_000))) for k in range(1, 21)]
    got = [(s, b["status"], b["billed_minutes"]) for s, b in seen]
    # inside the tolerance (up to 140 s) the reading goes on, but the advisor's
    # beats bill nothing the client has not been seen in: minute 1 only; at
    # 150 s the client has been silent 130 s: it ended, and nothing more is billed
    assert got == [(s, "active" if s <= 140 else "ended", 1) for s in range(30, 601, 30)], got
    last = seen[-1][1]
    assert (last["end_reason"], last["billed_minutes"]) == ("heartbeat_timeout", 1), last
    assert await wallet_cents(client_id) == 1900, "ten minutes of advisor heartbeats billed one minute: minute 1"
    row = await reading_row(rid)
    assert row["ended_at_ms"] == t + 20_000, "the reading ended at the client's last heartbeat"
    assert last["silent_party"] == "client"
    assert row["silent_party"] == "client"
    # the advisor's own end afterwards changes nothing
    r = await advisor.post(f"/v1/readings/{rid}/end", headers=at(t + 11 * MINUTE_MS))
    assert r.status == 200 and (r.json()["end_reason"], r.json()["billed_minutes"]) == ("heartbeat_timeout", 1)
    await assert_ledger_consistent()


async def test_an_advisor_end_bills_only_what_the_client_was_seen_in():
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    rid = (await active_reading(client, advisor, advisor_id, t))["id"]
    await _beat(client, rid, t + 50_000)
    await _beat(advisor, rid, t + 100_000)
    # minute 2 began at 60 s; the client was last heard at 50 s
    r = await advisor.post(f"/v1/readings/{rid}/end", headers=at(t + 110_000))
    body = r.json()
    assert (body["status"], body["end_reason"], body["billed_minutes"]) == ("ended", "advisor_ended", 1), body
    assert body["silent_party"] is None
    assert await wallet_cents(client_id) == 900


async def test_a_client_back_within_the_timeout_pays_the_gap_and_a_late_one_does_not():
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=2000)
    rid = (await active_reading(client, advisor, advisor_id, t))["id"]
    # a dropped connection: back after 110 s, both sides still there
    await _beat(advisor, rid, t + 60_000)
    body = await _beat(client, rid, t + 110_000)
    assert (body["status"], body["billed_minutes"]) == ("active", 2), body
    # now silent for 130 s while the advisor beats on; the late heartbeat finds it over
    for k in (150_000, 200_000, 230_000):
        assert (await _beat(advisor, rid, t + k))["billed_minutes"] == 2
    body = await _beat(client, rid, t + 240_000 + 1)
    assert (body["status"], body["end_reason"], body["billed_minutes"]) == ("ended", "heartbeat_timeout", 2), body
    assert (await reading_row(rid))["ended_at_ms"] == t + 110_000
    assert body["silent_party"] == "client"
    assert await wallet_cents(client_id) == 1800


async def test_an_absent_advisor_ends_the_reading_at_the_advisors_last_heartbeat():
    """Symmetric: the client keeps beating, the advisor's app went quiet."""
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=2000)
    rid = (await active_reading(client, advisor, advisor_id, t))["id"]
    await _beat(advisor, rid, t + 10_000)  # the advisor's last sign of life
    billed = []
    last = None
    for k in range(1, 21):
        last = await _beat(client, rid, t + k * 30_000)
        billed.append(last["billed_minutes"])
        if last["status"] == "ended":
            break
    assert last is not None
    # minutes begun while the advisor was gone for at most the timeout were
    # billed as they began (60 s, 120 s); at 150 s it is over, nothing more
    assert (last["status"], last["end_reason"], last["billed_minutes"]) == ("ended", "heartbeat_timeout", 3), billed
    assert (await reading_row(rid))["ended_at_ms"] == t + 10_000
    assert last["silent_party"] == "advisor"
    assert await wallet_cents(client_id) == 1700
    await assert_ledger_consistent()


async def test_the_cron_settles_a_reading_whose_client_went_silent_while_the_advisor_beats():
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=2000)
    rid = (await active_reading(client, advisor, advisor_id, t))["id"]
    await _beat(client, rid, t + 70_000)  # minute 2
    for k in range(1, 7):  # the last at 180 s: the client has been silent 110 s
        await _beat(advisor, rid, t + k * 30_000)
    # 119 s after the client's last heartbeat: left alone
    await local_runtime.dispatchScheduled("* * * * *", t + 70_000 + 119_000)
    assert (await reading_row(rid))["status"] == "active"
    for _ in range(30):  # earlier tests may have left more stale rows than one bounded run takes
        await local_runtime.dispatchScheduled("* * * * *", t + 70_000 + 121_000)
        if (await reading_row(rid))["status"] == "ended":
            break
    row = await reading_row(rid)
    assert (row["status"], row["end_reason"], row["billed_minutes"], row["ended_at_ms"]) == (
        "ended",
        "heartbeat_timeout",
        2,
        t + 70_000,
    ), row
    assert row["silent_party"] == "client"
    assert await wallet_cents(client_id) == 1800


async def test_the_sql_refuses_charges_the_presence_rule_forbids():
    """Statements that skip the Worker's plan: the trigger still refuses."""
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=2000)
    rid = int((await active_reading(client, advisor, advisor_id, t))["id"])
    await _beat(advisor, rid, t + 30_000)
    db = database()
    reading = await db.first(sql(billing.SELECT_READING, rid))
    # (1) the advisor asks for minute 2 (begun at 60 s) though the client was
    #     last heard at the accept
    with pytest.raises(TriggerAbort) as err:
        await db.batch(billing.charge_statements(reading, 2, t + 70_000, advisor_id))
    assert err.value.code == "reading_party_silent"
    # (2) anyone, after the client's silence passed the timeout, for a minute begun after it
    for by in (client_id, None):
        with pytest.raises(TriggerAbort) as err:
            await db.batch(billing.charge_statements(reading, 2, t + 121_000, by))
        assert err.value.code == "reading_party_silent"
    # (3) an advisor silent past the timeout: the client cannot pay a minute begun after that
    await _beat(client, rid, t + 100_000)  # bills minute 2 (both inside the timeout)
    reading = await db.first(sql(billing.SELECT_READING, rid))
    assert reading["billed_minutes"] == 2
    with pytest.raises(TriggerAbort) as err:
        await db.batch(billing.charge_statements(reading, 3, t + 30_000 + 121_000, client_id))
    assert err.value.code == "reading_party_silent"
    # the client's own request inside the timeout passes (minute 3 began at 120 s)
    await db.batch(billing.charge_statements(reading, 3, t + 125_000, client_id))
    assert (await reading_row(rid))["billed_minutes"] == 3
    # a reading's timeout is one of its fixed terms
    with pytest.raises(TriggerAbort) as err:
        await db.run(sql("UPDATE readings SET heartbeat_timeout_seconds = 3600 WHERE id = ?", rid))
    assert err.value.code == "reading_terms_fixed"
    await assert_ledger_consistent()


async def test_a_silent_client_racing_advisor_heartbeats_ends_and_the_cron_bills_nothing_more():
    """The client goes quiet; advisor heartbeats, the advisor's end and two
    cron runs all race, in random orders, past the timeout."""
    rng = random.Random(1313)
    base = now_ms()
    for round_no in range(4):
        t = base + round_no * 3600_000
        client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=3000)
        rid = (await active_reading(client, advisor, advisor_id, t))["id"]
        path = f"/v1/readings/{rid}"
        client_last = t + 90_000 + rng.randrange(0, 30_000)  # minute 2 begun
        await _beat(client, rid, client_last)
        await _beat(advisor, rid, client_last + 1)  # both there; then only the advisor's app is

        async def cron(at_ms: int) -> None:
            await local_runtime.dispatchScheduled("* * * * *", at_ms)

        ops = [advisor.post(path + "/heartbeat", headers=at(client_last + k * 20_000)) for k in range(1, 10)]
        ops += [
            # the advisor ends inside the timeout (advisor_ended) or after it (it ended at client_last)
            advisor.post(path + "/end", headers=at(client_last + rng.choice([60_000, 150_000]))),
            cron(client_last + TIMEOUT_MS + 1),
            cron(client_last + TIMEOUT_MS + 2),
        ]
        rng.shuffle(ops)
        for res in await asyncio.gather(*ops, return_exceptions=True):
            assert not isinstance(res, BaseException), res
            if res is not None:
                assert res.status == 200, res.text
        row = await reading_row(rid)
        # whoever got there first: advisor_ended (before the timeout) or the timeout, but never a minute
        # the client was not seen in
        assert row["status"] == "ended" and row["billed_minutes"] == 2, row
        assert await wallet_cents(client_id) == 2800
        if row["end_reason"] == "heartbeat_timeout":
            assert (row["ended_at_ms"], row["silent_party"]) == (client_last, "client"), row
        else:
            assert row["end_reason"] == "advisor_ended" and row["ended_at_ms"] - client_last <= TIMEOUT_MS, row
    await assert_ledger_consistent()


async def test_the_cron_finds_silent_readings_through_the_presence_index():
    from clairvora import cron

    plan = await database().all(sql("EXPLAIN QUERY PLAN " + cron._SILENT_READINGS, now_ms(), 10))
    details = " | ".join(str(r["detail"]) for r in plan.rows)
    assert "USING INDEX readings_active_by_presence" in details, details
    assert "TEMP B-TREE" not in details, details
