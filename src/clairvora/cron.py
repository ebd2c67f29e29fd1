"""The every-minute cron: bounded maintenance work, safe to run concurrently."""

from typing import Any

from . import logs
from .clock import Clock
from .db import Database, sql

MAX_EXPIRED_KEYS_PER_RUN = 500


async def run(controller: Any, env: Any, ctx: Any) -> dict[str, int]:
    db = Database(env.DB, primary=True)
    now_ms = Clock().now_ms()
    done: dict[str, int] = {}
    result = await db.run(sql(
        """DELETE FROM idempotency_keys WHERE rowid IN (
             SELECT rowid FROM idempotency_keys WHERE expires_at_ms < ? LIMIT ?)""",
        now_ms, MAX_EXPIRED_KEYS_PER_RUN,
    ))
    done["idempotency_keys_purged"] = result.changes
    logs.info("cron", cron=getattr(controller, "cron", None), **done)
    return done
