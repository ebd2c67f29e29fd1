"""The every-minute cron: bounded maintenance work, safe to run concurrently
(with itself and with the requests it races). One failing job does not stop
the others.

"now" is the controller's scheduledTime, so tests drive it with
`local_runtime.dispatchScheduled(cron, time_ms)`.

- expire reading requests not accepted within REQUEST_TIMEOUT_SECONDS (one
  conditional UPDATE, bounded);
- settle active readings where one side's last heartbeat is older than
  HEARTBEAT_TIMEOUT_SECONDS: bill the minutes begun before the earlier of the
  two last heartbeats and end them there, naming the side that went silent
  (billing.advance; its SQL conditions make a racing heartbeat, end or second
  cron run harmless). Found through readings_active_by_presence, an index on
  that earlier heartbeat; each reading's own timeout (fixed at request time)
  decides, so a reading picked here that is not yet silent is left alone;
- return expired, unspent promo credit to the promotions account (promo.py:
  one promo_expiry transfer per grant, bounded);
- purge expired Idempotency-Key records (bounded), and old records nothing reads
  any more: card-testing attempts past every failure window (they hold the
  client's IP) and PayPal webhook events past PayPal's redelivery (bounded);
- sweep orphaned photo objects (photos.py);
- advance the close of a ledger period (periods.py: open last month's once it
  is past when LEDGER_PERIOD_CLOSE=auto; archive up to a few segments to R2);
- move the chat of readings ended MESSAGE_ARCHIVE_DELAY_SECONDS ago to R2, and
  rewrite archived chats after an erasure (chat_archive_job.py, bounded by its
  own D1 budget under the shared ceiling);
- decide refunds of unused funds left in transit (refund_resolution.py: looked
  up in Authorize.Net's transaction lists by invoice number, bounded);
- clear advisors' earnings past the hold (clearance.py), send again or look up
  payouts PayPal has not settled, and make the automatic payouts (payout_cron.py);
- resolve deposits whose gateway answer never came back (deposit_resolution.py:
  looked up at Authorize.Net by invoice number after a grace period, bounded).
"""

from typing import Any

from . import (
    billing,
    chat_archive_job,
    clearance,
    deposit_resolution,
    logs,
    payout_cron,
    periods,
    photos,
    promo,
    refund_resolution,
)
from .clock import Clock
from .config import Settings
from .db import Database, sql
from .errors import Problem

MAX_EXPIRED_KEYS_PER_RUN = 500
MAX_EXPIRED_REQUESTS_PER_RUN = 200
MAX_TIMED_OUT_READINGS_PER_RUN = 10  # usually one D1 call each
# Settling stops once the run has made this many D1 calls (the cap per
# invocation is 50; a contended reading may cost a few retries).
CALL_BUDGET = 35
# Promo expiries stop once the run has made this many calls (one batch each).
PROMO_EXPIRY_CALL_BUDGET = 40
# Old records deleted per table per run, oldest first (migration 0100's indexes).
MAX_PURGED_PER_TABLE_PER_RUN = 500
DAY_MS = 86_400_000
# An attempt counts only inside DEPOSIT_FAILURE_WINDOW_SECONDS; a day more is margin.
ATTEMPT_MARGIN_MS = DAY_MS
# PayPal redelivers a webhook for up to 3 days; a redelivery after the purge is
# harmless (each payout movement is once by its transfer key), only re-verified.
PAYPAL_EVENT_RETENTION_MS = 30 * DAY_MS

_EXPIRE_REQUESTS = """
UPDATE readings SET status = 'expired', ended_at_ms = requested_at_ms + ?, version = version + 1
WHERE status = 'requested' AND id IN (
  SELECT id FROM readings WHERE status = 'requested' AND requested_at_ms < ?
  ORDER BY requested_at_ms LIMIT ?)"""

# The earlier of each reading's two last heartbeats, as the index
# readings_active_by_presence spells it (the planner uses the index only for
# this exact expression).
_SILENT_READINGS = f"""
SELECT {billing.CHARGE_COLUMNS} FROM readings r
WHERE r.status = 'active' AND {billing.BOTH_SEEN} < ?
ORDER BY {billing.BOTH_SEEN} LIMIT ?"""  # noqa: S608 - constant text


def _now_ms(controller: Any) -> int:
    scheduled = getattr(controller, "scheduledTime", None)
    if isinstance(scheduled, (int, float)) and scheduled > 0:
        return int(scheduled)
    return Clock().now_ms()


async def expire_requests(db: Database, settings: Settings, now_ms: int) -> dict[str, int]:
    timeout_ms = settings.request_timeout_s * 1000
    result = await db.run(sql(_EXPIRE_REQUESTS, timeout_ms, now_ms - timeout_ms, MAX_EXPIRED_REQUESTS_PER_RUN))
    return {"requests_expired": result.changes}


async def settle_silent_readings(db: Database, settings: Settings, now_ms: int) -> dict[str, int]:
    timeout_ms = settings.heartbeat_timeout_s * 1000
    silent = await db.all(sql(_SILENT_READINGS, now_ms - timeout_ms, MAX_TIMED_OUT_READINGS_PER_RUN))
    ended = 0
    for row in silent.rows:
        if db.counters.calls >= CALL_BUDGET:
            break
        try:
            after = await billing.advance(db, row, now_ms, "timeout", None)
        except Problem as exc:  # one busy reading must not stop the others (the next run retries it)
            logs.warning("cron_reading_skipped", reading_id=row["id"], code=exc.code)
            continue
        ended += after["status"] == "ended"
    return {"readings_timed_out": ended}


async def purge(db: Database, settings: Settings, now_ms: int) -> dict[str, int]:
    """One batch: expired Idempotency-Key records, attempts no window counts any more
    (in-flight ones stay for the stale-claim recovery) and PayPal events past redelivery."""
    attempts_before = now_ms - settings.deposit_failure_window_s * 1000 - ATTEMPT_MARGIN_MS
    keys, attempts, events = await db.batch(
        [
            sql(
                # idempotency_keys is WITHOUT ROWID: select the batch by its primary key.
                """DELETE FROM idempotency_keys WHERE (user_id, idempotency_key) IN (
                 SELECT user_id, idempotency_key FROM idempotency_keys WHERE expires_at_ms < ? LIMIT ?)""",
                now_ms,
                MAX_EXPIRED_KEYS_PER_RUN,
            ),
            sql(
                """DELETE FROM deposit_attempts WHERE payment_id IN (
                 SELECT payment_id FROM deposit_attempts
                 WHERE created_at_ms < ? AND state <> 'in_flight' ORDER BY created_at_ms LIMIT ?)""",
                attempts_before,
                MAX_PURGED_PER_TABLE_PER_RUN,
            ),
            sql(
                """DELETE FROM paypal_webhook_events WHERE event_id IN (
                 SELECT event_id FROM paypal_webhook_events
                 WHERE received_at_ms < ? ORDER BY received_at_ms LIMIT ?)""",
                now_ms - PAYPAL_EVENT_RETENTION_MS,
                MAX_PURGED_PER_TABLE_PER_RUN,
            ),
        ]
    )
    return {
        "idempotency_keys_purged": keys.changes,
        "deposit_attempts_purged": attempts.changes,
        "paypal_events_purged": events.changes,
    }


async def run(controller: Any, env: Any, ctx: Any) -> dict[str, int]:
    db = Database(env.DB, primary=True)
    settings = Settings.from_env(env)
    now_ms = _now_ms(controller)
    done: dict[str, int] = {}
    jobs = [
        ("expire_requests", lambda: expire_requests(db, settings, now_ms)),
        ("settle_silent_readings", lambda: settle_silent_readings(db, settings, now_ms)),
        ("expire_promo_credit", lambda: promo.expire_credit(db, now_ms, PROMO_EXPIRY_CALL_BUDGET)),
        ("purge", lambda: purge(db, settings, now_ms)),
        (photos.SWEEP_JOB, lambda: photos.sweep_orphans(db, env.MEDIA, now_ms)),
        (
            "close_ledger_period",
            lambda: periods.run_cron(
                db,
                periods.archive_bucket(env),
                now_ms,
                automatic=settings.ledger_period_close_auto,
                call_budget=CALL_BUDGET,
                hold_ms=settings.earnings_hold_days * 86_400_000,
            ),
        ),
        ("chat_archive", lambda: chat_archive_job.cron_job(db, env, settings, now_ms)),
        ("clear_earnings", lambda: clearance.clear_earnings(db, settings, now_ms, payout_cron.CALL_BUDGET)),
        ("resume_payouts", lambda: payout_cron.resume_payouts(db, settings, now_ms)),
        ("auto_payouts", lambda: payout_cron.auto_payouts(db, settings, now_ms)),
        # These may wait on the gateway, and each stops itself short of D1's per-invocation cap.
        ("resolve_refunds_in_transit", lambda: refund_resolution.resolve_refunds_in_transit(db, settings, now_ms)),
        ("resolve_stale_deposits", lambda: deposit_resolution.resolve_stale_deposits(db, settings, now_ms)),
    ]
    for name, job in jobs:
        try:
            done.update(await job())
        except Exception as exc:  # noqa: BLE001 - one failing job must not stop the others
            logs.error("cron_job_failed", job=name, error_type=type(exc).__name__, error=str(exc)[:200])
    logs.info("cron", cron=getattr(controller, "cron", None), d1=db.counters.server_timing(), **done)
    return done
