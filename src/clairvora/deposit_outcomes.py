"""A deposit's gateway answer, made statements and a reply: the payment status
of each outcome, the credit (wallet +, gateway clearing -, transfer key
`deposit:payment:<id>`), the settle batch's statements, the final reply and
the Idempotency-Key's stored copy of it (the wallet balance filled in by SQL).

One home for them because three callers must answer and credit alike: the
deposit route (payments.py), the authcapture webhook (webhooks.py:
credit_statements) and the cron's resolution of deposits whose answer never
came back (deposit_resolution.py: reply_for, credit_statements,
complete_claim_of_payment).
"""

from typing import Any

from . import anet, ledger
from .clock import rfc3339
from .db import Statement, sql
from .errors import Problem
from .idempotency import IdempotencyKey
from .ids import new_id
from .responses import encode_json

STATUS_OF_OUTCOME = {
    "approved": "approved",
    "held": "pending",
    "declined": "declined",
    "error": "error",
    "token_invalid": "error",
    "duplicate": "unknown",
    "unknown": "unknown",
    "not_processed": "error",
}


def credit_transfer_key(payment_id: int) -> str:
    return f"deposit:payment:{payment_id}"


def deposit_view(payment: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(payment["id"]),
        "amount_cents": int(payment["amount_cents"]),
        "currency": "USD",
        "status": payment["status"],
        "gateway_transaction_id": payment.get("gateway_transaction_id"),
        "created_at": rfc3339(payment["created_at_ms"]),
    }


def credit_statements(
    *, payment_id: int, user_id: int, amount_cents: int, transaction_id: str, response_code: str | None, now_ms: int
) -> list[Statement]:
    """Approve a payment and credit its amount, for one batch (also used by the webhook)."""
    return [
        sql(
            """UPDATE payments SET status = 'approved', gateway_transaction_id = ?, gateway_response_code = ?,
                                   updated_at_ms = ?
               WHERE id = ? AND status IN ('pending', 'unknown', 'error')""",
            transaction_id,
            response_code,
            now_ms,
            payment_id,
        ),
        *ledger.transfer(
            transfer_id=new_id(),
            key=credit_transfer_key(payment_id),
            kind="deposit",
            legs=[
                ledger.Leg(ledger.wallet_of(user_id), amount_cents),
                ledger.Leg(ledger.GATEWAY_CLEARING, -amount_cents),
            ],
            now_ms=now_ms,
            reference_type="payment",
            reference_id=payment_id,
            requested_by_user_id=user_id,
        ),
    ]


def complete_with_wallet(key: IdempotencyKey, status: int, body: dict[str, Any]) -> Statement:
    """Store the reply with the wallet balance as it is at the end of this batch
    (json_set fills it in SQL, so it is exact without another round trip)."""
    return sql(
        """UPDATE idempotency_keys
           SET state = 'done', response_status = ?,
               response_body = json_set(?, '$.wallet.available_cents',
                 (SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet'))
           WHERE user_id = ? AND idempotency_key = ? AND state = 'pending'
           RETURNING response_body""",
        status,
        encode_json(body),
        key.user_id,
        key.user_id,
        key.key,
    )


def settle_statements(
    key: IdempotencyKey,
    payment: dict[str, Any],
    result: anet.GatewayResult,
    reply_status: int,
    reply_body: dict[str, Any],
) -> list[Statement]:
    if result.outcome == "approved":
        assert result.transaction_id is not None
        statements = credit_statements(
            payment_id=payment["id"],
            user_id=key.user_id,
            amount_cents=payment["amount_cents"],
            transaction_id=result.transaction_id,
            response_code=result.response_code,
            now_ms=key.now_ms,
        )
    else:
        # A duplicate's transId is the original's; should another payment hold it
        # already (UNIQUE), keep NULL rather than fail the batch.
        statements = [
            sql(
                """UPDATE payments
               SET status = ?, updated_at_ms = ?, gateway_response_code = ?,
                   gateway_transaction_id = (SELECT ? WHERE NOT EXISTS
                     (SELECT 1 FROM payments WHERE gateway_transaction_id = ? AND id <> ?))
               WHERE id = ? AND status = 'pending'""",
                payment["status"],
                key.now_ms,
                result.response_code,
                result.transaction_id,
                result.transaction_id,
                payment["id"],
                payment["id"],
            )
        ]
    statements.append(complete_with_wallet(key, reply_status, reply_body))
    return statements


def reply_for(payment: dict[str, Any], result: anet.GatewayResult) -> tuple[int, dict[str, Any]]:
    """(status, body) of the final answer; wallet.available_cents is filled in by SQL."""
    deposit = deposit_view(payment)
    wallet = {"available_cents": 0, "held_cents": 0, "currency": "USD"}
    if result.outcome == "approved":
        return 201, {"deposit": deposit, "wallet": wallet}
    if result.outcome == "held":
        return 202, {"deposit": deposit, "wallet": wallet}
    if result.outcome == "declined":
        problem = Problem(
            402,
            "payment_declined",
            "Payment declined",
            "The card was declined; nothing was charged.",
            extra={"deposit": deposit, "wallet": wallet},
        )
    elif result.outcome == "token_invalid":
        problem = Problem(
            422,
            "payment_token_invalid",
            "Payment token invalid",
            "The Accept.js payment token was already used or has expired; nothing was charged. "
            "Get a new token from Accept.js and send it with a new Idempotency-Key.",
            extra={"deposit": deposit, "wallet": wallet},
        )
    elif result.outcome == "duplicate":
        original = f" (transaction {result.transaction_id})" if result.transaction_id else ""
        problem = Problem(
            409,
            "payment_duplicate",
            "Duplicate payment",
            f"The payment gateway had already received this deposit{original} and did not charge the card "
            "again. If that transaction was approved, the wallet is credited automatically when the gateway "
            "confirms it; check the wallet before depositing again.",
            extra={"deposit": deposit, "wallet": wallet},
        )
    elif result.outcome == "not_processed":
        problem = Problem(
            502,
            "payment_not_processed",
            "Payment not processed",
            "The payment gateway has no transaction for this deposit; nothing was charged. "
            "Deposit again with a new Idempotency-Key and a new Accept.js token.",
            extra={"deposit": deposit, "wallet": wallet},
        )
    elif result.outcome == "error":
        problem = Problem(
            502,
            "payment_gateway_error",
            "Payment gateway error",
            "The payment gateway could not process the card; nothing was charged.",
            extra={"deposit": deposit, "wallet": wallet},
        )
    elif result.timed_out:
        problem = Problem(
            504,
            "payment_gateway_timeout",
            "Payment gateway timeout",
            "The payment gateway did not answer in time. If the card was charged, the wallet is "
            "credited automatically; do not retry with a new Idempotency-Key before checking it.",
            extra={"deposit": deposit, "wallet": wallet},
        )
    else:
        problem = Problem(
            502,
            "payment_gateway_unavailable",
            "Payment gateway unavailable",
            "The payment gateway's answer could not be read. If the card was charged, the wallet is "
            "credited automatically.",
            extra={"deposit": deposit, "wallet": wallet},
        )
    return problem.status, problem.body()


def complete_claim_of_payment(
    *, payment_id: int, user_id: int, status: int, body: dict[str, Any], if_status: str, if_updated_at_ms: int
) -> Statement:
    """Store the final reply of the deposit request that claimed `payment_id`, if
    its key is still `pending` (the request died) and the payment now has
    `if_status` as of `if_updated_at_ms` (the batch's own update of it), for the
    cron's resolution. The key is found by the claim's note ({"payment_id": ...},
    RequestKey.claim_pending), among the user's keys (its primary key's prefix)."""
    return sql(
        """UPDATE idempotency_keys
           SET state = 'done', response_status = ?,
               response_body = json_set(?, '$.wallet.available_cents',
                 (SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet'))
           WHERE user_id = ? AND state = 'pending'
             AND CASE WHEN json_valid(response_body) THEN json_extract(response_body, '$.payment_id') END = ?
             AND EXISTS (SELECT 1 FROM payments WHERE id = ? AND status = ? AND updated_at_ms = ?)""",
        status,
        encode_json(body),
        user_id,
        user_id,
        str(payment_id),
        payment_id,
        if_status,
        if_updated_at_ms,
    )
