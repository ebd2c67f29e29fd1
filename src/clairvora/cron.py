"""The every-minute cron: bounded maintenance work, safe to run concurrently."""

from typing import Any

from . import logs, photos
from .clock import Clock
from .db import Database, sql

MAX_EXPIRED_KEYS_PER_RUN = 500


async def run(controller: Any, env: Any, ctx: Any) -> dict[str, int]:
    db = Database(env.DB, primary=True)
    now_ms = Clock().now_ms()
    done: dict[str, int] = {}
    result = await db.run(sql(
        # idempotency_keys is WITHOUT ROWID: select the batch by its primary key.
        """DELETE FROM idempotency_keys WHERE (user_id, idempotency_key) IN (
             SELECT user_id, idempotency_key FROM idempotency_keys WHERE expires_at_ms < ? LIMIT ?)""",
        now_ms, MAX_EXPIRED_KEYS_PER_RUN,
    ))
    done["idempotency_keys_purged"] = result.changes
    try:
        done.update(await photos.sweep_orphans(db, env.MEDIA, now_ms))
    except Exception as exc:  # noqa: BLE001 - one failing job must not stop the others
        logs.error("cron_job_failed", job=photos.SWEEP_JOB, error_type=type(exc).__name__, error=str(exc)[:200])
    logs.info("cron", cron=getattr(controller, "cron", None), **done)
    return done
