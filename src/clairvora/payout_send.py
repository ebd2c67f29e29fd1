"""Sending a requested payout to PayPal and recording what PayPal said, one
batch (payout_flow.py has the states and the money). Used by the route, on a
retried Idempotency-Key, and by the cron for payouts whose answer was lost."""

from dataclasses import dataclass
from typing import Any

from . import logs, paypal
from .config import Settings
from .db import Database, Statement, TransientD1Error, TriggerAbort, UniqueViolation
from .payout_flow import (
    POLL_SENT_AFTER_MS,
    RETRY_MAX_MS,
    SETTLE_ATTEMPTS,
    Move,
    item_statements,
    move_statements,
    open_receiver,
    outcome_of_status,
    update_statement,
)


def retry_delay_ms(attempts: int) -> int:
    return min(RETRY_MAX_MS, 60_000 * 2 ** min(attempts, 6))


@dataclass
class Sent:
    """What sending a requested payout came to: the statements recording it and,
    for the reply, whether PayPal holds it and a refusal's name."""

    statements: list[Statement]
    accepted: bool
    refused: str | None = None
    batch_id: str | None = None


async def send(settings: Settings, payout: dict[str, Any], now_ms: int) -> Sent:
    """Create (or find again) the payout's batch at PayPal. Never raises for
    PayPal's sake: no usable answer leaves it `requested` for the cron."""
    pid = int(payout["id"])
    later = now_ms + retry_delay_ms(int(payout["attempts"]))
    if payout["receiver_ciphertext_b64"] is None:
        # Erased with its owner (DELETE /v1/me) before PayPal accepted it: nothing can be sent.
        move = Move("failed", "return_transit")
        failed = update_statement(pid, now_ms, status="failed", failure_code="receiver_erased")
        return Sent([*move_statements(payout, move, now_ms), failed], False, "receiver_erased")
    receiver = await open_receiver(
        settings,
        {
            "key_version": payout["receiver_key_version"],
            "iv_b64": payout["receiver_iv_b64"],
            "ciphertext_b64": payout["receiver_ciphertext_b64"],
            "recipient_type": payout["recipient_type"],
        },
        int(payout["advisor_id"]),
    )
    body = paypal.payout_request(pid, int(payout["amount_cents"]), payout["recipient_type"], receiver)
    result = await paypal.create_payout(settings, body)
    logs.info(
        "payout_sent", payout_id=pid, outcome=result.outcome, http_status=result.http_status, error=result.error_name
    )
    if result.outcome == "created":
        sent = update_statement(
            pid,
            now_ms,
            status="sent",
            only_from="requested",
            batch_id=result.batch_id,
            batch_status=result.batch_status,
            next_attempt_at_ms=now_ms + POLL_SENT_AFTER_MS,
            clear_receiver=True,
            attempted=True,
        )
        return Sent([sent], True, batch_id=result.batch_id)
    if result.outcome == "duplicate" and result.batch_id:
        # PayPal already holds this payout (an earlier attempt whose answer was lost): look it up.
        try:
            batch = await paypal.get_batch(settings, result.batch_id)
        except paypal.PayPalUnavailable:
            batch = None
        sent = update_statement(
            pid,
            now_ms,
            status="sent",
            only_from="requested",
            batch_id=result.batch_id,
            next_attempt_at_ms=now_ms + 60_000,
            clear_receiver=True,
            attempted=True,
        )
        if batch is None or batch.item is None or batch.item.sender_item_id != str(pid):
            return Sent([sent], True, batch_id=result.batch_id)
        outcome = outcome_of_status(batch.item.transaction_status)
        after_sent = {**payout, "status": "sent"}
        statements, _move = item_statements(after_sent, batch.item, outcome, now_ms, batch.batch_id)
        return Sent([sent, *statements], True, batch_id=result.batch_id)
    if result.outcome == "refused":
        move = Move("failed", "return_transit")
        failed = update_statement(
            pid, now_ms, status="failed", failure_code=result.error_name, clear_receiver=True, attempted=True
        )
        return Sent([*move_statements(payout, move, now_ms), failed], False, result.error_name)
    if result.outcome == "duplicate":
        logs.error("payout_duplicate_unnamed", payout_id=pid)
    return Sent([update_statement(pid, now_ms, next_attempt_at_ms=later, attempted=True)], False)


def moved_by_another(exc: Exception) -> bool:
    """A move refused because the payout moved first (a webhook, the cron, a retry).
    A retried batch (settle, after a transient error) repeats its own transfer's
    id, so when its first attempt did commit, the repeat fails on that id (the
    primary key is checked before the transfer key): the same case."""
    if isinstance(exc, TriggerAbort):
        return exc.code.startswith("payout_")
    return isinstance(exc, UniqueViolation) and any(
        c in exc.columns for c in ("transfers.transfer_key", "transfers.id")
    )


async def settle(db: Database, statements: list[Statement], payout_id: int, fallback: list[Statement]) -> list[Any]:
    """The batch recording a send or an item's word. Retried once on a transient
    D1 error (PayPal may already hold the payout; every statement is safe to
    repeat: the UPDATEs are idempotent, a repeated transfer fails on its key).
    If the payout moved meanwhile, the move is refused as a whole and only
    `fallback` (e.g. storing the request's reply) runs."""
    for attempt in range(SETTLE_ATTEMPTS):
        try:
            return await db.batch(statements)
        except TransientD1Error:
            if attempt + 1 >= SETTLE_ATTEMPTS:
                logs.error("payout_settle_failed", payout_id=payout_id)
                raise
        except (TriggerAbort, UniqueViolation) as exc:
            if not moved_by_another(exc):
                raise
            logs.info("payout_moved_meanwhile", payout_id=payout_id)
            return await db.batch(fallback) if fallback else []
    raise AssertionError("unreachable")
