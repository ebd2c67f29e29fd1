"""Races: heartbeats from both participants, retries, `end` and the cron, all
at once, many times. Every minute is charged exactly once and the ledger
stays consistent."""

import asyncio
import random

import local_runtime

from clairvora.db import sql
from market_support import MINUTE_MS, active_reading, assert_ledger_consistent, at, market_pair, now_ms, request_reading
from support import database

ROUNDS = 4


async def _charges(rid: int) -> tuple[list[int], int]:
    db = database()
    minutes = [
        r["minute"]
        for r in (
            await db.all(sql("SELECT minute FROM reading_charges WHERE reading_id = ? ORDER BY minute", rid))
        ).rows
    ]
    transfers = (
        await db.first(
            sql(
                "SELECT count(*) AS n FROM transfers WHERE reference_type = 'reading' AND reference_id = ? AND kind = 'reading_charge'",
                rid,
            )
        )
    )["n"]
    return minutes, transfers


async def test_racing_heartbeats_end_cron_and_retries_charge_each_minute_once():
    rng = random.Random(20261127)
    reasons: set[str] = set()
    base = now_ms()
    for round_no in range(ROUNDS):
        t = base + round_no * 3600_000
        funds = [1000, 450, 250, 1000][round_no]
        client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=funds)
        reading = await active_reading(client, advisor, advisor_id, t)
        rid = reading["id"]
        path = f"/v1/readings/{rid}"
        ender = client if round_no % 2 else advisor

        async def cron(at_ms: int) -> None:  # a coroutine: starts only when the phase runs
            await local_runtime.dispatchScheduled("* * * * *", at_ms)

        # Minutes 2..5: both participants beat at once, one beat is retried,
        # and a cron run joins (the heartbeat is recent, so it must not end it).
        phases = []
        for k in range(1, 5):
            when = t + k * MINUTE_MS + rng.randrange(0, 1000)
            phases.append(
                [
                    client.post(path + "/heartbeat", headers=at(when)),
                    advisor.post(path + "/heartbeat", headers=at(when + 1)),
                    client.post(path + "/heartbeat", headers=at(when)),
                    cron(when + 2),
                ]
            )
        # The end races more heartbeats and two cron runs late enough to find
        # the reading silent if they get there first.
        end_at = t + 4 * MINUTE_MS + 30_000
        phases.append(
            [
                ender.post(path + "/end", headers=at(end_at)),
                client.post(path + "/heartbeat", headers=at(end_at)),
                advisor.post(path + "/heartbeat", headers=at(end_at)),
                cron(end_at + 125_000),
                cron(end_at + 125_001),
            ]
        )
        for ops in phases:
            rng.shuffle(ops)
            results = await asyncio.gather(*ops, return_exceptions=True)
            for res in results:
                assert not isinstance(res, BaseException), res
                if res is not None:  # a cron run returns nothing
                    assert res.status in (200, 409), res.text
        row = await database().first(sql("SELECT * FROM readings WHERE id = ?", int(rid)))
        assert row["status"] == "ended", row
        minutes, transfers = await _charges(int(rid))
        billed = row["billed_minutes"]
        assert minutes == list(range(1, billed + 1)), "each minute once, in order"
        assert transfers == billed, "one transfer per charged minute"
        assert 1 <= billed <= min(5, funds // 100)
        wallet = await database().first(
            sql("SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet'", client_id)
        )
        assert wallet["balance_cents"] == funds - 100 * billed
        earnings = (await advisor.get("/v1/advisors/me/earnings")).json()
        assert earnings["balance_cents"] == 70 * billed
        if row["end_reason"] == "insufficient_funds":
            assert billed == funds // 100 and row["ended_at_ms"] == t + billed * MINUTE_MS
        reasons.add(row["end_reason"])
        print("race outcome", round_no, row["end_reason"], billed)
    # rounds with funds for fewer minutes than used cannot end any other way
    assert "insufficient_funds" in reasons, reasons
    await assert_ledger_consistent()


async def test_racing_accept_cancel_and_duplicate_requests():
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    _c, _cid, _other, other_advisor_id = await market_pair()
    # two requests at once (different advisors, different keys): one open reading at most
    a, b = await asyncio.gather(request_reading(client, advisor_id, t), request_reading(client, other_advisor_id, t))
    assert sorted([a.status, b.status]) == [201, 409]
    rid = (a if a.status == 201 else b).json()["id"]
    acceptor = advisor if a.status == 201 else _other
    # the advisor accepts while the client cancels: exactly one wins
    acc, can = await asyncio.gather(
        acceptor.post(f"/v1/readings/{rid}/accept", headers=at(t + 1)),
        client.post(f"/v1/readings/{rid}/cancel", headers=at(t + 1)),
    )
    assert sorted([acc.status, can.status]) == [200, 409]
    row = await database().first(sql("SELECT status, billed_minutes FROM readings WHERE id = ?", int(rid)))
    if acc.status == 200:
        assert (row["status"], row["billed_minutes"]) == ("active", 1)
    else:
        assert (row["status"], row["billed_minutes"]) == ("cancelled", 0)
    # the same Idempotency-Key twice at once: one reading, the same answer
    await client.post(f"/v1/readings/{rid}/end", headers=at(t + 2))
    key = "race-key-" + str(t)
    r1, r2 = await asyncio.gather(
        request_reading(client, advisor_id, t + 3, key), request_reading(client, advisor_id, t + 3, key)
    )
    assert {r1.status, r2.status} <= {201, 409}
    assert 201 in (r1.status, r2.status)
    count = await database().first(
        sql("SELECT count(*) AS n FROM readings WHERE client_id = ? AND status = 'requested'", client_id)
    )
    assert count["n"] == 1
    await assert_ledger_consistent()


async def test_the_same_accept_twice_at_once_charges_minute_one_once():
    """A double tap, or a retry racing the original: both answer the active reading, one charge."""
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    rid = (await request_reading(client, advisor_id, t)).json()["id"]
    first, second = await asyncio.gather(
        advisor.post(f"/v1/readings/{rid}/accept", headers=at(t + 1)),
        advisor.post(f"/v1/readings/{rid}/accept", headers=at(t + 1)),
    )
    for r in (first, second):
        assert r.status == 200, r.text
        assert (r.json()["status"], r.json()["billed_minutes"]) == ("active", 1)
    minutes, transfers = await _charges(int(rid))
    assert (minutes, transfers) == ([1], 1)
    wallet = await database().first(
        sql("SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet'", client_id)
    )
    assert wallet["balance_cents"] == 900
    await assert_ledger_consistent()
