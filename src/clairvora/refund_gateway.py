"""The gateway side of a refund of unused funds (wallet_refunds.py): which
deposits can be refunded now, read from Authorize.Net's details of each
(settled or not, when, and the card's last 4 digits, which we never store),
and the refundTransaction of one part."""

from typing import Any

from . import anet, anet_refunds, logs
from .errors import Problem
from .ids import new_id
from .refund_parts import IN_TRANSIT, Decision, decide_answer, invoice_number
from .requests import RequestContext

MAX_PARTS = 5  # deposits one refund draws on (wallet_refunds.parts CHECK)
MAX_LOOKUPS = 5  # getTransactionDetails calls per request


def unavailable(detail: str) -> Problem:
    return Problem(
        503, "refund_gateway_unavailable", "Payment gateway unavailable", detail, headers={"retry-after": "30"}
    )


async def plan_parts(
    rc: RequestContext, candidates: list[dict[str, Any]], target: int
) -> tuple[list[dict[str, Any]], int, int]:
    """(parts, refundable_now, settling): the newest settled deposits covering
    `target`, each with the card's last 4 digits, from the gateway's details."""
    settings, now_ms = rc.settings, rc.clock.now_ms()
    window_ms = settings.refund_window_days * 86_400_000
    parts: list[dict[str, Any]] = []
    planned = settling = lookups = 0
    for deposit in candidates:
        if planned >= target or len(parts) >= MAX_PARTS or lookups >= MAX_LOOKUPS:
            break
        trans_id = str(deposit["gateway_transaction_id"])
        if not (trans_id.isascii() and trans_id.isdigit()):
            continue  # not a transaction the gateway made (e.g. demo data): nothing to refund it against
        lookups += 1
        try:
            details = await anet_refunds.transaction_details(settings, trans_id)
        except anet.ReportingError as exc:
            if exc.code == anet_refunds.NOT_FOUND:
                continue
            logs.warning(
                "refund_details_failed", request_id=rc.request_id, payment_id=deposit["id"], error=str(exc)[:200]
            )
            raise unavailable(
                "The card gateway could not be asked about your deposits; nothing was refunded."
            ) from None
        left = int(deposit["left_cents"])
        if details.status in anet_refunds.UNSETTLED:
            settling += left
            continue
        settled_at = details.settlement_time_ms
        if details.status != anet_refunds.SETTLED or details.card_last4 is None:
            continue
        if settled_at is not None and settled_at + window_ms <= now_ms:
            continue
        amount = min(left, target - planned)
        parts.append(
            {
                "id": new_id(),
                "payment_id": int(deposit["id"]),
                "user_id": rc.user_id,
                "amount_cents": amount,
                "deposit_transaction_id": str(deposit["gateway_transaction_id"]),
                "card_last4": details.card_last4,
                "state": "in_transit",
                "gateway_transaction_id": None,
                "outcome": None,
                "gateway_error_code": None,
            }
        )
        planned += amount
    return parts, planned, settling


async def send_part(rc: RequestContext, part: dict[str, Any], *, resent: bool) -> Decision:
    """One part at the gateway (a resend first reads the card's last 4 digits again)."""
    last4 = part.get("card_last4")
    if last4 is None:
        try:
            last4 = (
                await anet_refunds.transaction_details(rc.settings, str(part["deposit_transaction_id"]))
            ).card_last4
        except anet.ReportingError:
            return IN_TRANSIT
        if last4 is None:
            return IN_TRANSIT
    result = await anet_refunds.refund(
        rc.settings,
        amount_cents=int(part["amount_cents"]),
        card_last4=last4,
        ref_trans_id=str(part["deposit_transaction_id"]),
        invoice_number=invoice_number(int(part["id"])),
        ref_id=str(part["id"]),
    )
    decision = decide_answer(result, resent=resent)
    logs.info(
        "wallet_refund_part",
        request_id=rc.request_id,
        part_id=part["id"],
        outcome=result.outcome,
        error_code=result.error_code,
        state=decision.state,
        resent=resent,
    )
    return decision
