"""The cron settles silent readings and expires unanswered requests, bounded
and safe to run concurrently with itself and with heartbeats."""

import asyncio

import local_runtime

from clairvora import billing, cron
from clairvora.db import sql
from market_support import MINUTE_MS, active_reading, assert_ledger_consistent, at, market_pair, now_ms, request_reading
from support import database


async def _run_cron_until(done, time_ms: int, runs: int = 30) -> int:
    """Runs the cron at `time_ms` until `done()` (earlier tests may have left
    more stale rows than one bounded run takes). Returns the runs needed."""
    for n in range(1, runs + 1):
        await local_runtime.dispatchScheduled("* * * * *", time_ms)
        if await done():
            return n
    raise AssertionError("cron did not finish")


async def _reading(rid) -> dict:
    return await database().first(sql("SELECT * FROM readings WHERE id = ?", int(rid)))


async def test_cron_ends_silent_readings_at_the_last_heartbeat_and_expires_requests():
    t = now_ms()
    client, _client_id, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    reading = await active_reading(client, advisor, advisor_id, t)
    rid = reading["id"]
    r = await client.post(f"/v1/readings/{rid}/heartbeat", headers=at(t + MINUTE_MS + 30_000))
    assert r.json()["billed_minutes"] == 2
    r = await advisor.post(f"/v1/readings/{rid}/heartbeat", headers=at(t + MINUTE_MS + 30_000))
    assert r.json()["billed_minutes"] == 2
    last = t + MINUTE_MS + 30_000
    # not yet silent for HEARTBEAT_TIMEOUT_SECONDS (120 s): left alone
    await local_runtime.dispatchScheduled("* * * * *", last + 119_000)
    assert (await _reading(rid))["status"] == "active"

    other_client, _oc, _oa, other_advisor_id = await market_pair(funds=1000)
    req = (await request_reading(other_client, other_advisor_id, t)).json()

    async def settled() -> bool:
        return (await _reading(rid))["status"] == "ended" and (await _reading(req["id"]))["status"] == "expired"

    # five minutes later: only the minutes begun before the last heartbeat are billed
    await _run_cron_until(settled, last + 5 * MINUTE_MS)
    row = await _reading(rid)
    assert (row["end_reason"], row["billed_minutes"], row["ended_at_ms"]) == ("heartbeat_timeout", 2, last)
    assert row["silent_party"] == "both"
    expired = await _reading(req["id"])
    assert expired["ended_at_ms"] == t + 120_000
    # both participants see the end; the client may open a new reading
    r = await advisor.get(f"/v1/readings/{rid}")
    assert r.json()["status"] == "ended"
    assert (await request_reading(other_client, other_advisor_id, t + 10 * MINUTE_MS)).status == 201
    await assert_ledger_consistent()


async def test_cron_work_per_run_is_bounded():
    worst_per_reading = 2 * billing.MAX_ATTEMPTS + billing.MAX_BATCHES_PER_CALL
    assert cron.CALL_BUDGET + worst_per_reading + 1 <= 50, "a run stays under D1's 50 calls per invocation"
    assert cron.MAX_EXPIRED_REQUESTS_PER_RUN <= 500 and cron.MAX_EXPIRED_KEYS_PER_RUN <= 500
    t = now_ms()
    mine = []
    for i in range(3):
        c, _cid, _a, aid = await market_pair(funds=1000)
        r = await request_reading(c, aid, t - 3600_000 + i)  # older than anything else waiting
        assert r.status == 201
        mine.append(int(r.json()["id"]))
    db = database()
    # The Worker runs in this interpreter: shrink the bound for one run.
    saved = cron.MAX_EXPIRED_REQUESTS_PER_RUN
    cron.MAX_EXPIRED_REQUESTS_PER_RUN = 2
    try:
        await local_runtime.dispatchScheduled("* * * * *", t)
    finally:
        cron.MAX_EXPIRED_REQUESTS_PER_RUN = saved
    rows = (await db.all(sql("SELECT id, status FROM readings WHERE id IN (?, ?, ?)", *mine))).rows
    status = {r["id"]: r["status"] for r in rows}
    assert [status[i] for i in mine] == ["expired", "expired", "requested"], "at most the bound, oldest first"
    await local_runtime.dispatchScheduled("* * * * *", t)
    assert (await db.first(sql("SELECT status FROM readings WHERE id = ?", mine[2])))["status"] == "expired"


async def test_concurrent_cron_runs_and_heartbeats_settle_once():
    t = now_ms()
    client, _client_id, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    reading = await active_reading(client, advisor, advisor_id, t)
    rid = reading["id"]
    late = t + 10 * MINUTE_MS
    results = await asyncio.gather(
        local_runtime.dispatchScheduled("* * * * *", late),
        local_runtime.dispatchScheduled("* * * * *", late + 1),
        client.post(f"/v1/readings/{rid}/heartbeat", headers=at(late)),
        advisor.post(f"/v1/readings/{rid}/end", headers=at(late)),
        return_exceptions=True,
    )
    assert not any(isinstance(x, Exception) for x in results), results
    row = await _reading(rid)
    assert (row["status"], row["end_reason"], row["billed_minutes"], row["ended_at_ms"], row["silent_party"]) == (
        "ended",
        "heartbeat_timeout",
        1,
        t,
        "both",
    )
    assert results[3].status in (200, 409)
    await assert_ledger_consistent()
