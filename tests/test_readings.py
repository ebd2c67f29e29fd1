"""The reading lifecycle: requests and their refusals, the state machine
(illegal transitions are 409 and change nothing), accept charging minute 1,
end, cancel/decline, expiry, and billing edge cases."""

import pytest

from clairvora import billing
from clairvora.db import TriggerAbort, sql
from market_support import (
    MINUTE_MS,
    active_reading,
    assert_ledger_consistent,
    at,
    fetch_with_env,
    fund,
    market_pair,
    now_ms,
    reading_row,
    request_reading,
    wallet_cents,
)
from support import database, unique


async def test_request_refusals_change_nothing():
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=200, funds=199)
    r = await request_reading(client, advisor_id, t)
    assert r.status == 402 and r.json()["code"] == "insufficient_funds"
    await fund(client_id, 1)

    r = await advisor.post(
        "/v1/readings", json={"advisor_id": str(advisor_id)}, headers=at(t, **{"idempotency-key": unique()})
    )
    assert r.status == 422 and r.json()["code"] == "own_advisor"
    r = await client.post("/v1/readings", json={"advisor_id": str(advisor_id)})
    assert r.status == 400 and r.json()["code"] == "idempotency_key_required"
    r = await request_reading(client, 1234567890123, t)
    assert r.status == 404
    r = await client.post(
        "/v1/readings", json={"advisor_id": str(advisor_id), "channel": "video"}, headers={"idempotency-key": unique()}
    )
    assert r.status == 400

    offline_client, _cid, offline_adv, offline_id = await market_pair(funds=1000)
    me = await offline_adv.get("/v1/advisors/me")
    await offline_adv.patch("/v1/advisors/me", json={"status": "busy"}, headers={"if-match": me.headers["etag"]})
    r = await request_reading(offline_client, offline_id, t)
    assert r.status == 409 and r.json()["code"] == "advisor_unavailable"

    count = await database().first(sql("SELECT count(*) AS n FROM readings WHERE client_id = ?", client_id))
    assert count["n"] == 0

    key = unique("k")
    r = await request_reading(client, advisor_id, t, key)
    assert r.status == 201, r.text
    # one open reading per client (the partial UNIQUE index)
    _c2, _c2id, _a2, other_advisor = await market_pair()
    r2 = await request_reading(client, other_advisor, t)
    assert r2.status == 409 and r2.json()["code"] == "reading_already_open"
    assert r2.json()["open_reading_id"] == r.json()["id"]
    # the same key with another body is refused
    r3 = await client.post(
        "/v1/readings", json={"advisor_id": str(other_advisor)}, headers=at(t, **{"idempotency-key": key})
    )
    assert r3.status == 422 and r3.json()["code"] == "idempotency_key_reused"


async def test_rate_is_fixed_at_request_time():
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    r = await request_reading(client, advisor_id, t)
    rid = r.json()["id"]
    me = await advisor.get("/v1/advisors/me")
    r = await advisor.patch(
        "/v1/advisors/me", json={"rate_cents_per_minute": 900}, headers={"if-match": me.headers["etag"]}
    )
    assert r.status == 200
    r = await advisor.post(f"/v1/readings/{rid}/accept", headers=at(t + 1000))
    assert r.status == 200 and r.json()["rate_cents_per_minute"] == 100
    assert await wallet_cents(client_id) == 900


async def test_accept_without_funds_for_minute_one_changes_nothing():
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=100)
    rid = (await request_reading(client, advisor_id, t)).json()["id"]
    # the wallet is drained between request and accept (e.g. a gateway reversal)
    db = database()
    from clairvora import ledger
    from clairvora.ids import new_id

    await db.batch(
        ledger.transfer(
            transfer_id=new_id(),
            key=f"test:{new_id()}",
            kind="adjustment",
            legs=[ledger.Leg(ledger.wallet_of(client_id), -50), ledger.Leg(ledger.PLATFORM_REVENUE, 50)],
            now_ms=t,
        )
    )
    before = await reading_row(rid)
    r = await advisor.post(f"/v1/readings/{rid}/accept", headers=at(t + 1000))
    assert r.status == 402 and r.json()["code"] == "insufficient_funds"
    assert await reading_row(rid) == before
    assert await db.first(sql("SELECT 1 FROM reading_charges WHERE reading_id = ?", int(rid))) is None
    await fund(client_id, 50)
    r = await advisor.post(f"/v1/readings/{rid}/accept", headers=at(t + 2000))
    assert r.status == 200 and r.json()["billed_minutes"] == 1
    assert await wallet_cents(client_id) == 0
    await assert_ledger_consistent()


async def test_illegal_transitions_are_409_and_change_nothing():
    t = now_ms()
    client, _cid, advisor, advisor_id = await market_pair(funds=1000)
    rid = (await request_reading(client, advisor_id, t)).json()["id"]
    # not yet active
    for who, action in [(client, "heartbeat"), (advisor, "end"), (client, "end")]:
        r = await who.post(f"/v1/readings/{rid}/{action}", headers=at(t + 1))
        assert r.status == 409, (action, r.text)
    # roles: only the advisor accepts/declines, only the client cancels
    assert (await client.post(f"/v1/readings/{rid}/accept", headers=at(t + 1))).status == 403
    assert (await client.post(f"/v1/readings/{rid}/decline", headers=at(t + 1))).status == 403
    assert (await advisor.post(f"/v1/readings/{rid}/cancel", headers=at(t + 1))).status == 403
    r = await advisor.post(f"/v1/readings/{rid}/decline", headers=at(t + 2))
    assert r.status == 200 and r.json()["status"] == "declined"
    before = await reading_row(rid)
    for who, action in [
        (advisor, "accept"),
        (advisor, "decline"),
        (client, "cancel"),
        (client, "heartbeat"),
        (client, "end"),
    ]:
        r = await who.post(f"/v1/readings/{rid}/{action}", headers=at(t + 3))
        assert r.status == 409, (action, r.text)
        assert r.json()["reading_status"] == "declined"
    assert await reading_row(rid) == before

    # cancelled by the client before accept; the client may then open another
    rid2 = (await request_reading(client, advisor_id, t + 10)).json()["id"]
    r = await client.post(f"/v1/readings/{rid2}/cancel", headers=at(t + 11))
    assert r.status == 200 and r.json()["status"] == "cancelled"
    assert (await advisor.post(f"/v1/readings/{rid2}/accept", headers=at(t + 12))).status == 409

    # an active reading cannot be cancelled or declined; accepting it again
    # (a retry whose answer was lost) answers the reading and charges nothing
    reading = await active_reading(client, advisor, advisor_id, t + 20)
    before = await reading_row(reading["id"])
    for who, action in [(advisor, "decline"), (client, "cancel")]:
        r = await who.post(f"/v1/readings/{reading['id']}/{action}", headers=at(t + 21))
        assert r.status == 409, (action, r.text)
    r = await advisor.post(f"/v1/readings/{reading['id']}/accept", headers=at(t + 21))
    assert r.status == 200 and (r.json()["status"], r.json()["billed_minutes"]) == ("active", 1), r.text
    assert await reading_row(reading["id"]) == before
    # ended is final: ending again (either side) answers the reading as it ended
    r = await client.post(f"/v1/readings/{reading['id']}/end", headers=at(t + 22))
    assert r.status == 200 and r.json()["end_reason"] == "client_ended"
    before = await reading_row(reading["id"])
    r = await advisor.post(f"/v1/readings/{reading['id']}/end", headers=at(t + 23))
    assert r.status == 200 and (r.json()["status"], r.json()["end_reason"]) == ("ended", "client_ended"), r.text
    assert (await advisor.post(f"/v1/readings/{reading['id']}/accept", headers=at(t + 23))).status == 200
    for who, action in [(advisor, "decline"), (client, "cancel")]:
        assert (await who.post(f"/v1/readings/{reading['id']}/{action}", headers=at(t + 23))).status == 409, action
    assert await reading_row(reading["id"]) == before


async def test_the_sql_refuses_what_the_state_machine_forbids():
    """Even a statement that skips the Worker's checks cannot break the rules."""
    t = now_ms()
    client, _cid, advisor, advisor_id = await market_pair(funds=1000)
    reading = await active_reading(client, advisor, advisor_id, t)
    db = database()
    rid = int(reading["id"])
    for statement in [
        "UPDATE readings SET status = 'requested' WHERE id = ?",
        "UPDATE readings SET status = 'cancelled' WHERE id = ?",
        "UPDATE readings SET rate_cents_per_minute = 1, advisor_cents_per_minute = 1, platform_cents_per_minute = 0 WHERE id = ?",
        "UPDATE readings SET billed_minutes = 5 WHERE id = ?",
        "UPDATE readings SET billed_minutes = 0 WHERE id = ?",
        "DELETE FROM reading_charges WHERE reading_id = ?",
        "UPDATE reading_charges SET amount_cents = 1 WHERE reading_id = ?",
    ]:
        with pytest.raises(TriggerAbort):
            await db.run(sql(statement, rid))
    # a charge row for a minute out of order, or without its transfer, is refused
    with pytest.raises(TriggerAbort) as err:
        await db.run(
            sql(
                """INSERT INTO reading_charges (reading_id, minute, transfer_id, amount_cents, charged_at_ms)
                            SELECT ?, 3, transfer_id, amount_cents, 0 FROM reading_charges WHERE reading_id = ?""",
                rid,
                rid,
            )
        )
    assert err.value.code == "reading_not_billable"
    assert (await reading_row(rid))["billed_minutes"] == 1
    await client.post(f"/v1/readings/{rid}/end", headers=at(t + 1))
    with pytest.raises(TriggerAbort) as err:
        await db.run(sql("UPDATE readings SET status = 'active', end_reason = NULL WHERE id = ?", rid))
    assert err.value.code == "reading_illegal_transition"


async def test_end_bills_minutes_begun_and_either_side_may_end():
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    reading = await active_reading(client, advisor, advisor_id, t)
    r = await client.post(f"/v1/readings/{reading['id']}/heartbeat", headers=at(t + 90_000))
    assert r.json()["billed_minutes"] == 2
    r = await advisor.post(f"/v1/readings/{reading['id']}/heartbeat", headers=at(t + 90_000))
    assert r.json()["billed_minutes"] == 2
    # 2 minutes and a bit: minute 3 has begun, so the client's end bills 3 minutes
    r = await client.post(f"/v1/readings/{reading['id']}/end", headers=at(t + 2 * MINUTE_MS + 1))
    body = r.json()
    assert (body["status"], body["end_reason"], body["billed_minutes"], body["balance_cents"]) == (
        "ended",
        "client_ended",
        3,
        700,
    )
    assert await wallet_cents(client_id) == 700

    reading = await active_reading(client, advisor, advisor_id, t + 10 * MINUTE_MS)
    # exactly at the start of minute 2: minute 2 has not begun before the end
    # (the advisor's end: it sees no money figure)
    r = await advisor.post(f"/v1/readings/{reading['id']}/end", headers=at(t + 11 * MINUTE_MS))
    body = r.json()
    assert (body["end_reason"], body["billed_minutes"], body["balance_cents"]) == ("advisor_ended", 1, None)
    row = await reading_row(reading["id"])
    assert row["ended_at_ms"] == t + 11 * MINUTE_MS
    assert await wallet_cents(client_id) == 600
    await assert_ledger_consistent()


async def test_an_end_that_funds_cannot_cover_ends_at_the_last_paid_minute():
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=250)
    reading = await active_reading(client, advisor, advisor_id, t)
    r = await client.post(f"/v1/readings/{reading['id']}/end", headers=at(t + 100_000))  # minute 2 begun
    assert r.json()["billed_minutes"] == 2
    # another reading, long silent-free gap: 5 minutes begun, 0.5 affordable
    await fund(client_id, 100)  # balance 150
    reading = await active_reading(client, advisor, advisor_id, t + 10 * MINUTE_MS)
    r = await client.post(f"/v1/readings/{reading['id']}/heartbeat", headers=at(t + 11 * MINUTE_MS + 5))
    body = r.json()
    assert (body["status"], body["end_reason"], body["billed_minutes"], body["balance_cents"]) == (
        "ended",
        "insufficient_funds",
        1,
        50,
    )
    assert (await reading_row(reading["id"]))["ended_at_ms"] == t + 11 * MINUTE_MS
    await assert_ledger_consistent()


async def test_late_accept_expires_the_request():
    t = now_ms()
    client, _cid, advisor, advisor_id = await market_pair(funds=1000)
    rid = (await request_reading(client, advisor_id, t)).json()["id"]
    r = await advisor.post(f"/v1/readings/{rid}/accept", headers=at(t + 121_000))  # REQUEST_TIMEOUT_SECONDS = 120
    assert r.status == 409 and r.json()["code"] == "reading_expired"
    row = await reading_row(rid)
    assert (row["status"], row["billed_minutes"], row["ended_at_ms"]) == ("expired", 0, t + 120_000)


async def test_silent_reading_is_settled_at_its_last_heartbeat_by_whoever_comes_next():
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    reading = await active_reading(client, advisor, advisor_id, t)
    rid = reading["id"]
    await client.post(f"/v1/readings/{rid}/heartbeat", headers=at(t + MINUTE_MS + 10))  # minute 2
    await advisor.post(f"/v1/readings/{rid}/heartbeat", headers=at(t + MINUTE_MS + 10))
    # both silent longer than HEARTBEAT_TIMEOUT_SECONDS (120): a late heartbeat finds it over
    r = await advisor.post(f"/v1/readings/{rid}/heartbeat", headers=at(t + MINUTE_MS + 10 + 121_000))
    body = r.json()
    assert (body["status"], body["end_reason"], body["billed_minutes"]) == ("ended", "heartbeat_timeout", 2)
    assert body["silent_party"] == "both"
    assert (await reading_row(rid))["ended_at_ms"] == t + MINUTE_MS + 10
    assert await wallet_cents(client_id) == 800


async def test_many_minutes_are_charged_in_bounded_batches():
    """A long gap (possible with a long heartbeat timeout, here one hour for
    this reading) is charged in batches of MAX_MINUTES_PER_BATCH minutes,
    every minute exactly once."""
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=60, funds=60 * 40)
    r = await fetch_with_env(
        {"HEARTBEAT_TIMEOUT_SECONDS": "3600"},
        "POST",
        "/v1/readings",
        token=client.token,
        json_body={"advisor_id": str(advisor_id), "channel": "chat"},
        headers=at(t, **{"idempotency-key": unique("k")}),
    )
    assert r.status == 201 and r.json()["heartbeat_timeout_seconds"] == 3600, r.text
    rid = r.json()["id"]
    assert (await advisor.post(f"/v1/readings/{rid}/accept", headers=at(t))).status == 200
    db = database()
    row = await database().first(sql(billing.SELECT_READING, int(rid)))
    after = await billing.advance(db, row, t + 34 * MINUTE_MS + 1, "heartbeat", client_id)
    assert after["billed_minutes"] == 35 and after["status"] == "active"
    assert db.counters.calls == 3, "35 minutes: three batches of <= 15 (plus the first read)"
    after = await billing.advance(db, after, t + 45 * MINUTE_MS, "heartbeat", client_id)
    assert (after["status"], after["end_reason"], after["billed_minutes"]) == ("ended", "insufficient_funds", 40)
    assert after["ended_at_ms"] == t + 40 * MINUTE_MS
    assert await wallet_cents(client_id) == 0
    await assert_ledger_consistent()


def test_plan_is_bounded_and_never_exceeds_funds():
    reading = {
        "status": "active",
        "accepted_at_ms": 0,
        "billing_period_seconds": 60,
        "heartbeat_timeout_seconds": 10**6,
        "billed_minutes": 3,
        "rate_cents_per_minute": 100,
        "last_heartbeat_at_ms": 0,
        "client_heartbeat_at_ms": None,
        "advisor_heartbeat_at_ms": None,
        "wallet_cents": 10_000,
        "client_id": 1,
        "advisor_id": 2,
        "advisor_cents_per_minute": 70,
        "platform_cents_per_minute": 30,
        "promo_advisor_cents_per_minute": None,
    }
    p = billing.plan(reading, 40 * MINUTE_MS, "heartbeat", "client")
    assert (p.first_minute, p.minutes, p.more, p.end_reason) == (4, billing.MAX_MINUTES_PER_BATCH, True, None)
    p = billing.plan({**reading, "wallet_cents": 250}, 40 * MINUTE_MS, "heartbeat", "client")
    assert (p.minutes, p.end_reason, p.ended_at_ms) == (2, "insufficient_funds", 5 * MINUTE_MS)
    p = billing.plan(reading, 3 * MINUTE_MS - 1, "heartbeat", "client")
    assert (p.minutes, p.end_reason, p.heartbeat_at_ms, p.heartbeat_by) == (0, None, 3 * MINUTE_MS - 1, "client")
    p = billing.plan(reading, 3 * MINUTE_MS, "heartbeat", "client")
    assert p.minutes == 1, "minute 4 begins at 3 periods and a heartbeat then charges it"
    p = billing.plan(reading, 3 * MINUTE_MS, "client_ended", "client")
    assert (p.minutes, p.end_reason) == (0, "client_ended"), "an end at that instant does not"
    # the advisor bills only what the client was seen in
    seen = {**reading, "client_heartbeat_at_ms": 4 * MINUTE_MS + 5}
    p = billing.plan(seen, 40 * MINUTE_MS, "heartbeat", "advisor")
    assert (p.first_minute, p.minutes, p.heartbeat_by) == (4, 2, "advisor"), "minutes 4 and 5, no further"
    p = billing.plan(seen, 40 * MINUTE_MS, "advisor_ended", "advisor")
    assert (p.minutes, p.end_reason, p.heartbeat_at_ms) == (2, "advisor_ended", None)
    p = billing.plan(seen, 40 * MINUTE_MS, "heartbeat", None)
    assert (p.minutes, p.heartbeat_at_ms) == (2, None), "nobody's heartbeat is recorded for nobody"
    # a side silent past the timeout: the reading ends at its last heartbeat
    silent = {
        **reading,
        "heartbeat_timeout_seconds": 120,
        "client_heartbeat_at_ms": 1000,
        "advisor_heartbeat_at_ms": 9000,
    }
    p = billing.plan(silent, 500_000, "timeout", None)
    assert (p.minutes, p.end_reason, p.ended_at_ms, p.when_heartbeat_at_ms) == (0, "heartbeat_timeout", 1000, 1000)
    assert billing.silent_party(*billing.seen_at(silent)) == "client"
    for who in ("client", "advisor"):
        p = billing.plan(silent, 500_000, "heartbeat", who)
        assert (p.end_reason, p.heartbeat_at_ms) == ("heartbeat_timeout", None), "a late heartbeat is not recorded"
    p = billing.plan(
        {**silent, "advisor_heartbeat_at_ms": 400_000, "client_heartbeat_at_ms": 450_000}, 500_000, "timeout", None
    )
    assert not p.writes, "the cron leaves a reading with recent heartbeats alone"
    assert billing.silent_party(5, 5) == "both" and billing.silent_party(6, 5) == "advisor"
    # promo credit first: 250 of it and 100 in the wallet pay minutes 4, 5 and 6 (50 + 50), not 7
    promo = {**reading, "wallet_cents": 100, "promo_grants_json": "[[7, 250, 1000000000]]"}
    p = billing.plan(promo, 40 * MINUTE_MS, "heartbeat", "client")
    assert (p.minutes, p.end_reason, [pay.promo_cents for pay in p.pays]) == (3, "insufficient_funds", [100, 100, 50])
    assert p.pays[2].takes == ((7, 50),)
    # credit valid only for minutes that begin before it expires (minute 6 begins at 5 periods)
    expiring = {**promo, "wallet_cents": 1000, "promo_grants_json": f"[[7, 1000, {5 * MINUTE_MS}]]"}
    p = billing.plan(expiring, 7 * MINUTE_MS, "heartbeat", "client")
    assert [pay.promo_cents for pay in p.pays] == [100, 100, 0, 0, 0]
    # a batch holds what fits: promo minutes have more statements each
    many = {**reading, "id": 5, "promo_grants_json": "[" + ",".join(f"[{i}, 60, 10000000]" for i in range(1, 20)) + "]"}
    p = billing.plan(many, 40 * MINUTE_MS, "heartbeat", "client")
    assert p.more and 0 < p.minutes < billing.MAX_MINUTES_PER_BATCH
    assert len(billing.batch_for(many, p, 40 * MINUTE_MS, 1)[0]) <= 100
    for balance in range(0, 2000, 37):
        for now in range(0, 30 * MINUTE_MS, 7 * 60_013):
            p = billing.plan({**reading, "wallet_cents": balance}, now, "heartbeat", "client")
            assert p.minutes * 100 <= balance and p.minutes <= billing.MAX_MINUTES_PER_BATCH
