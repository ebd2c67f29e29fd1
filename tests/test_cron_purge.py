"""The cron's idempotency-key purge (idempotency_keys is WITHOUT ROWID)."""

import time

import local_runtime

from clairvora.db import sql
from support import database, new_user


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
