"""One per-deposit refund of unused funds (a "part" of a wallet refund): its
three ledger movements, and how a gateway answer picks between them.

    reserve   wallet -> refunds in transit        'wallet_refund'             (the request's first batch)
    settle    refunds in transit -> gateway clearing  'wallet_refund_settlement'  (the gateway refunded it)
    return    refunds in transit -> wallet        'wallet_refund_return'      (it did not)

Each is ONE D1 batch. Settle and return share the transfer key
`wallet_refund:<part>:outcome` (UNIQUE), and migration 0092's triggers make the
transfer agree with the part's state, which a conditional UPDATE moves out of
`in_transit` first in the same batch: a part is settled or returned exactly
once, whoever (the request, its retry, the cron) gets there first; the loser's
batch rolls back whole. The deposit's `refunded_cents` counts the part from
the reservation and gives it back on a return, bounded in SQL by what the
deposit has left (payments CHECK).

Which answer means what (`decide_answer`): approved, or a duplicate naming the
transaction the gateway already made for this refund, settles; no readable
answer (timeout, transport failure, held) leaves the part in transit for the
resolver; a refusal returns the money, unless the refund was a RESEND (a
retry resuming a request that died): a resend's refusal does not prove the
first delivery failed (whether the gateway checks for a duplicate before its
refund criteria is unconfirmed), so it too is left to the resolver, which
decides from the gateway's transaction lists.
"""

from dataclasses import dataclass
from typing import Any, Literal

from . import anet, ledger
from .anet_refunds import REFUND_STATUSES
from .db import Statement, sql
from .ids import new_id

PartState = Literal["in_transit", "settled", "returned"]


@dataclass(frozen=True, slots=True)
class Decision:
    state: PartState
    outcome: str | None = None  # approved | duplicate | found | refused | not_processed
    transaction_id: str | None = None
    error_code: str | None = None
    reason: str = ""  # why a part stays in transit (logs)


IN_TRANSIT = Decision("in_transit")


def invoice_number(part_id: int) -> str:
    """Never all digits: webhooks.py reads a numeric invoiceNumber as a deposit's id."""
    return f"R{part_id}"


def outcome_key(part_id: int) -> str:
    return f"wallet_refund:{part_id}:outcome"


def reserve_statements(
    *, part_id: int, refund_id: int, user_id: int, payment_id: int, amount_cents: int, now_ms: int
) -> list[Statement]:
    return [
        sql(
            """INSERT INTO wallet_refund_parts (id, refund_id, user_id, payment_id, amount_cents, state,
                                                created_at_ms, updated_at_ms)
               VALUES (?, ?, ?, ?, ?, 'in_transit', ?, ?)""",
            part_id,
            refund_id,
            user_id,
            payment_id,
            amount_cents,
            now_ms,
            now_ms,
        ),
        sql(
            "UPDATE payments SET refunded_cents = refunded_cents + ?, updated_at_ms = ? WHERE id = ? AND user_id = ?",
            amount_cents,
            now_ms,
            payment_id,
            user_id,
        ),
        *ledger.transfer(
            transfer_id=new_id(),
            key=f"wallet_refund:{part_id}",
            kind="wallet_refund",
            legs=[
                ledger.Leg(ledger.wallet_of(user_id), -amount_cents),
                ledger.Leg(ledger.REFUNDS_IN_TRANSIT, amount_cents),
            ],
            now_ms=now_ms,
            reference_type="wallet_refund",
            reference_id=part_id,
            requested_by_user_id=user_id,
        ),
    ]


def resolve_statements(part: dict[str, Any], decision: Decision, now_ms: int) -> list[Statement]:
    """Settle or return a part in transit (one batch)."""
    assert decision.state in ("settled", "returned") and decision.outcome is not None
    part_id, amount, user_id = int(part["id"]), int(part["amount_cents"]), int(part["user_id"])
    statements = [
        sql(
            """UPDATE wallet_refund_parts
               SET state = ?, outcome = ?, gateway_transaction_id = ?, gateway_error_code = ?,
                   updated_at_ms = ?, resolved_at_ms = ?
               WHERE id = ? AND user_id = ? AND state = 'in_transit'""",
            decision.state,
            decision.outcome,
            decision.transaction_id,
            decision.error_code,
            now_ms,
            now_ms,
            part_id,
            user_id,
        )
    ]
    if decision.state == "settled":
        legs = [ledger.Leg(ledger.REFUNDS_IN_TRANSIT, -amount), ledger.Leg(ledger.GATEWAY_CLEARING, amount)]
        kind: ledger.TransferKind = "wallet_refund_settlement"
    else:
        statements.append(
            sql(
                "UPDATE payments SET refunded_cents = refunded_cents - ?, updated_at_ms = ? WHERE id = ? AND user_id = ?",
                amount,
                now_ms,
                int(part["payment_id"]),
                user_id,
            )
        )
        legs = [ledger.Leg(ledger.REFUNDS_IN_TRANSIT, -amount), ledger.Leg(ledger.wallet_of(user_id), amount)]
        kind = "wallet_refund_return"
    statements.extend(
        ledger.transfer(
            transfer_id=new_id(),
            key=outcome_key(part_id),
            kind=kind,
            legs=legs,
            now_ms=now_ms,
            reference_type="wallet_refund",
            reference_id=part_id,
        )
    )
    return statements


def requeue_statement(part: dict[str, Any], now_ms: int) -> Statement:
    """Undecided: to the back of the resolver's queue."""
    return sql(
        """UPDATE wallet_refund_parts SET updated_at_ms = ?
           WHERE id = ? AND user_id = ? AND state = 'in_transit' AND updated_at_ms = ?""",
        now_ms,
        int(part["id"]),
        int(part["user_id"]),
        int(part["updated_at_ms"]),
    )


def decide_answer(result: anet.GatewayResult, *, resent: bool) -> Decision:
    """A refundTransaction answer -> the part's fate (pure)."""
    if result.outcome == "approved" and result.transaction_id:
        return Decision("settled", "approved", result.transaction_id)
    if result.outcome == "duplicate":
        if result.transaction_id:
            return Decision("settled", "duplicate", result.transaction_id)
        return Decision("in_transit", reason="duplicate without the original's transaction id")
    if result.outcome in ("unknown", "held"):
        return Decision("in_transit", reason=result.error_text or result.outcome)
    if resent:
        return Decision("in_transit", reason=f"a resend was refused ({result.error_code})")
    return Decision("returned", "refused", error_code=(result.error_code or result.outcome)[:16])


def decide_lists(part: dict[str, Any], transactions: list[anet.TransactionSummary], complete: bool) -> Decision:
    """What the gateway's lists hold for a part's invoice (pure; the resolver)."""
    refunds = [t for t in transactions if t.status in REFUND_STATUSES]
    if len(refunds) > 1:
        return Decision("in_transit", reason="two refund transactions for one invoice")
    if refunds:
        if refunds[0].amount_cents != int(part["amount_cents"]):
            return Decision("in_transit", reason="refunded amount differs")
        return Decision("settled", "found", refunds[0].trans_id)
    if transactions:
        # Declined, failed, or voided before it settled: no money went back.
        return Decision("returned", "refused", error_code=transactions[0].status[:16])
    if not complete:
        return Decision("in_transit", reason="the gateway's lists were not read to the end")
    return Decision("returned", "not_processed")
