"""The cron's purges: expired idempotency keys (idempotency_keys is WITHOUT ROWID), old
card-testing attempts and PayPal webhook events."""

import time

import local_runtime

from clairvora import cron
from clairvora.db import sql
from support import database, new_user, unique
from test_deposits import deposit_body


async def test_cron_purges_expired_idempotency_keys_and_keeps_live_ones():
    _sub, client = await new_user("purge")
    uid = int((await client.get("/v1/me")).json()["id"])
    now = int(time.time() * 1000)
    insert = """INSERT INTO idempotency_keys (user_id, idempotency_key, route, request_sha256, state,
                                              created_at_ms, expires_at_ms)
                VALUES (?, ?, 'test', ?, 'done', ?, ?)"""
    await database().batch(
        [
            sql(insert, uid, "expired", "0" * 64, now - 10, now - 1),
            sql(insert, uid, "live", "0" * 64, now - 10, now + 3_600_000),
        ]
    )
    await local_runtime.dispatchScheduled("* * * * *", now)
    rows = (
        await database().all(
            sql("SELECT idempotency_key FROM idempotency_keys WHERE user_id = ? ORDER BY idempotency_key", uid)
        )
    ).rows
    assert [r["idempotency_key"] for r in rows] == ["live"]


async def test_cron_purges_attempts_past_every_window_and_old_paypal_events():
    """Card-testing attempts hold the client's IP and count only inside the failure
    window; PayPal redelivers an event for 3 days. Past those (and a margin) the cron
    deletes them, oldest first; newer ones, and an attempt still in flight, stay."""
    _sub, client = await new_user("purge_att")
    for _ in range(3):
        r = await client.post("/v1/wallet/deposits", deposit_body(1000), headers={"idempotency-key": unique("pa")})
        assert r.status == 201, r.text
    uid = int((await client.get("/v1/me")).json()["id"])
    db = database()
    ids = [int(r["payment_id"]) for r in (await db.all(sql(
        "SELECT payment_id FROM deposit_attempts WHERE user_id = ? ORDER BY payment_id", uid))).rows]  # fmt: skip
    assert len(ids) == 3
    now = int(time.time() * 1000)
    long_ago = now - 40 * cron.DAY_MS
    await db.batch(
        [
            sql("UPDATE deposit_attempts SET created_at_ms = ? WHERE payment_id IN (?, ?)", long_ago, ids[0], ids[1]),
            sql("UPDATE deposit_attempts SET state = 'in_flight' WHERE payment_id = ?", ids[1]),
            sql(
                """INSERT INTO paypal_webhook_events (event_id, event_type, outcome, received_at_ms)
                   VALUES (?, 'PAYMENT.PAYOUTS-ITEM.SUCCEEDED', 'applied', ?), (?, 'PAYMENT.PAYOUTS-ITEM.SUCCEEDED', 'applied', ?)""",
                f"WH-old-{ids[0]}",
                long_ago,
                f"WH-new-{ids[0]}",
                now - cron.DAY_MS,
            ),
        ]
    )
    await local_runtime.dispatchScheduled("* * * * *", now)
    left = {int(r["payment_id"]) for r in (await db.all(sql(
        "SELECT payment_id FROM deposit_attempts WHERE user_id = ?", uid))).rows}  # fmt: skip
    assert left == {ids[1], ids[2]}  # the old settled one went; in flight and recent stay
    events = {r["event_id"] for r in (await db.all(sql(
        "SELECT event_id FROM paypal_webhook_events WHERE event_id IN (?, ?)", f"WH-old-{ids[0]}", f"WH-new-{ids[0]}"))).rows}  # fmt: skip
    assert events == {f"WH-new-{ids[0]}"}
