"""Refund parts the gateway's answer never settled: decided from Authorize.Net's
transaction lists (the cron, every minute).

A part stays `in_transit` when its refundTransaction got no readable answer
(timeout, transport failure, held), when a retry's resend was refused, or
when the request died between reserving and settling and no retry came within
wallet_refunds.RESUME_WINDOW_MS. The money then sits in refunds in transit.

`resolve_refunds_in_transit` takes such parts once RESOLVE_AFTER_MS has
passed since their last change (by then no request can still send them: the
live request's own calls end within its timeouts, and a retry resends only
within the resume window) and looks their invoice numbers ("R<part id>", each
refund carries its own) up in the same lists deposits are found in
(deposit_resolution.find_invoices: the unsettled transactions, then the
batches settled since), bounded per run. Per part, one batch
(refund_parts.decide_lists):
- one refund transaction of our amount (refundPendingSettlement,
  refundSettledSuccessfully): settled;
- only other transactions (declined, failed, voided before settling): returned;
- nothing, with every list read to the end: returned (`not_processed`: the
  gateway never made it);
- anything else (two refunds, another amount, lists cut short): left, moved to
  the back of the queue, and listed by the ledger check until decided.
Every write is conditional on the part still being in transit (refund_parts.py),
so a racing retry or a second run changes nothing twice.
"""

from typing import Any

from . import anet, logs
from .config import Settings
from .db import Database, TriggerAbort, UniqueViolation, sql
from .deposit_resolution import CLOCK_SLACK_MS, find_invoices
from .refund_parts import decide_lists, invoice_number, requeue_statement, resolve_statements

RESOLVE_AFTER_MS = 15 * 60_000
MAX_AGE_MS = 30 * 86_400_000  # one lookup's settled batches span at most 31 days
MAX_PARTS_PER_RUN = 10
D1_CALL_CEILING = 40  # leave room for the deposit resolution after this job (50 per invocation)

_WAITING = """
SELECT id, refund_id, user_id, payment_id, amount_cents, created_at_ms, updated_at_ms
FROM wallet_refund_parts
WHERE state = 'in_transit' AND updated_at_ms < ? AND created_at_ms >= ?
ORDER BY updated_at_ms, id LIMIT ?"""


async def resolve_refunds_in_transit(db: Database, settings: Settings, now_ms: int) -> dict[str, int]:
    """The cron job; counts for the cron log."""
    if not (settings.anet_endpoint and settings.anet_login_id and settings.anet_transaction_key):
        return {}
    waiting = await db.all(sql(_WAITING, now_ms - RESOLVE_AFTER_MS, now_ms - MAX_AGE_MS, MAX_PARTS_PER_RUN))
    parts: list[dict[str, Any]] = waiting.rows
    counts = {"refunds_looked_up": 0, "refunds_resolved": 0, "refunds_undecided": 0}
    if not parts:
        return counts
    since_ms = min(int(p["created_at_ms"]) for p in parts) - CLOCK_SLACK_MS
    try:
        search = await find_invoices(settings, {invoice_number(int(p["id"])) for p in parts}, since_ms, now_ms)
    except anet.ReportingError as exc:
        logs.warning("refund_lookup_failed", error=str(exc)[:200], waiting=len(parts))
        return {**counts, "refund_lookup_failed": 1}
    counts["refunds_looked_up"] = len(parts)
    for part in parts:
        if db.counters.calls >= D1_CALL_CEILING:
            break
        decision = decide_lists(part, search.found.get(invoice_number(int(part["id"])), []), search.complete)
        if decision.state == "in_transit":
            counts["refunds_undecided"] += 1
            logs.warning("refund_lookup_undecided", part_id=part["id"], reason=decision.reason)
            await db.run(requeue_statement(part, now_ms))
            continue
        try:
            await db.batch(resolve_statements(part, decision, now_ms))
        except (UniqueViolation, TriggerAbort) as exc:
            logs.info("refund_lookup_raced", part_id=part["id"], error=type(exc).__name__)
            continue
        counts["refunds_resolved"] += 1
        logs.info(
            "refund_resolved",
            part_id=part["id"],
            state=decision.state,
            outcome=decision.outcome,
            gateway_transaction_id=decision.transaction_id,
        )
    return counts
