"""`POST /v1/webhooks/authorizenet`: Authorize.Net's signed event notifications.

Authentication is the signature, not a user: `X-ANET-Signature: sha512=<HEX>`
is HMAC-SHA512 of the exact raw body keyed with the Signature Key's ASCII
characters (not hex-decoded); the hex is compared case-insensitively and in
constant time. A missing or wrong signature is 401 and changes nothing.

Every verified event is recorded in `webhook_events` (notificationId is the
primary key) IN THE SAME BATCH as its effect, so a replayed event fails on the
key, rolls back, and answers 200 as a no-op. Effects:
- `net.authorize.payment.authcapture.created` / `.capture.created` /
  `.priorAuthCapture.created` / `.fraud.approved`: a payment we left `pending`
  (held for review) or `unknown` (timeout) is approved and credited, matched on
  invoiceNumber (= our payment id) or the transaction id, amount checked;
- `.refund.created` / `.void.created` for a credited deposit: a
  `deposit_reversal` transfer (wallet -, gateway clearing +), the only transfer
  allowed to take a wallet below zero, and the payment's reversed_cents
  (bounded by its amount in SQL). A negative wallet cannot start a reading
  (a reading request needs funds for its first minute) until a deposit covers it;
- `.fraud.declined` for a held payment: marked declined, nothing credited;
- anything else (unknown event or transaction): recorded, 200.
"""

import hashlib
import hmac
import json
from typing import Any

from . import anet, ledger, logs
from .db import CheckViolation, Database, Statement, TriggerAbort, UniqueViolation, sql
from .deposit_outcomes import credit_statements
from .errors import Problem, bad_request
from .ids import new_id
from .requests import RequestContext
from .responses import Reply
from .routing import Route

MAX_WEBHOOK_BYTES = 16 * 1024
SIGNATURE_PREFIX = "sha512="
CAPTURE_EVENTS = frozenset(
    {
        "net.authorize.payment.authcapture.created",
        "net.authorize.payment.capture.created",
        "net.authorize.payment.priorAuthCapture.created",
        "net.authorize.payment.fraud.approved",
    }
)
REFUND = "net.authorize.payment.refund.created"
VOID = "net.authorize.payment.void.created"
FRAUD_DECLINED = "net.authorize.payment.fraud.declined"


def signature_hex(key: str, body: bytes) -> str:
    return hmac.new(key.encode("ascii"), body, hashlib.sha512).hexdigest()


def signature_valid(key: str, body: bytes, header: str | None) -> bool:
    if header is None:
        return False
    value = header.strip()
    if value[: len(SIGNATURE_PREFIX)].lower() != SIGNATURE_PREFIX:
        return False
    given = value[len(SIGNATURE_PREFIX) :].strip().lower()
    if len(given) != 128 or not given.isascii():
        return False
    return hmac.compare_digest(signature_hex(key, body), given)


async def _verified_body(rc: RequestContext) -> bytes:
    declared = rc.header("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
        raise Problem(
            413, "body_too_large", "Request body too large", f"Webhooks are limited to {MAX_WEBHOOK_BYTES} bytes."
        )
    body = await rc.body_bytes()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise Problem(
            413, "body_too_large", "Request body too large", f"Webhooks are limited to {MAX_WEBHOOK_BYTES} bytes."
        )
    key = rc.settings.anet_signature_key
    if not key or not key.isascii():
        logs.error("webhook_misconfigured", request_id=rc.request_id)
        raise Problem(500, "misconfigured", "Server misconfigured", "The webhook signature key is not set.")
    if not signature_valid(key, body, rc.header("x-anet-signature")):
        logs.warning("webhook_bad_signature", request_id=rc.request_id, size=len(body))
        raise Problem(401, "invalid_signature", "Unauthorized", "Missing or invalid X-ANET-Signature.")
    return body


def _parse_event(body: bytes) -> dict[str, Any]:
    try:
        event = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise bad_request("The body is not JSON.", "body") from None
    if not isinstance(event, dict):
        raise bad_request("The body is not a JSON object.", "body")
    notification_id, event_type = event.get("notificationId"), event.get("eventType")
    if not isinstance(notification_id, str) or not 1 <= len(notification_id) <= 64:
        raise bad_request("'notificationId' must be a string of 1-64 characters.", "notificationId")
    if not isinstance(event_type, str) or not 1 <= len(event_type) <= 100:
        raise bad_request("'eventType' must be a string of 1-100 characters.", "eventType")
    payload = event.get("payload")
    event["payload"] = payload if isinstance(payload, dict) else {}
    return event


def _transaction_id(payload: dict[str, Any]) -> str | None:
    value = payload.get("id")
    if isinstance(value, (str, int)) and not isinstance(value, bool) and 1 <= len(str(value)) <= 40:
        return str(value)
    return None


def _invoice_payment_id(payload: dict[str, Any]) -> int | None:
    value = payload.get("invoiceNumber")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        return int(value)
    return None


async def _find_payment(db: Database, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Our payment: by invoiceNumber (our id, set on every charge), else by the gateway's transaction id."""
    invoice = _invoice_payment_id(payload)
    if invoice is not None:
        row = await db.first(sql("SELECT * FROM payments WHERE id = ?", invoice))
        if row is not None:
            return row
    trans_id = _transaction_id(payload)
    if trans_id is not None:
        return await db.first(sql("SELECT * FROM payments WHERE gateway_transaction_id = ?", trans_id))
    return None


class _Event:
    def __init__(self, event: dict[str, Any], now_ms: int) -> None:
        self.notification_id: str = event["notificationId"]
        self.event_type: str = event["eventType"]
        self.payload: dict[str, Any] = event["payload"]
        self.transaction_id = _transaction_id(self.payload)
        self.now_ms = now_ms

    def record(self, outcome: str, payment_id: int | None) -> Statement:
        assert len(outcome) <= 40
        return sql(
            """INSERT INTO webhook_events (notification_id, event_type, gateway_transaction_id, payment_id, outcome,
                                           received_at_ms) VALUES (?, ?, ?, ?, ?, ?)""",
            self.notification_id,
            self.event_type,
            self.transaction_id,
            payment_id,
            outcome,
            self.now_ms,
        )


def _is_event_replay(exc: UniqueViolation) -> bool:
    return any(c.startswith("webhook_events.") for c in exc.columns)


async def _apply(db: Database, ev: _Event, outcome: str, payment_id: int | None, effect: list[Statement]) -> str:
    """Record the event and its effect in one batch; a replay is a no-op."""
    try:
        await db.batch([ev.record(outcome, payment_id), *effect])
    except UniqueViolation as exc:
        if _is_event_replay(exc):
            return "duplicate"
        raise
    return outcome


async def _on_capture(db: Database, ev: _Event, payment: dict[str, Any] | None) -> tuple[str, list[Statement]]:
    if payment is None:
        return "unknown_transaction", []
    # `error` too: a second delivery of a deposit whose first delivery charged the
    # card can be refused for its spent token (E00114) rather than as a duplicate
    # (the gateway does not document the order), and the payment is then recorded
    # `error`. The signed capture of our invoice is the gateway's word that the
    # money moved, so it is credited (once: the credit's transfer key is unique).
    if payment["status"] not in ("pending", "unknown", "error"):
        return ("already_credited" if payment["status"] in ("approved", "refunded") else "unexpected_capture"), []
    amount = anet.decimal_to_cents(ev.payload.get("authAmount"))
    if amount is None or amount != payment["amount_cents"] or ev.transaction_id is None:
        logs.warning("webhook_capture_mismatch", payment_id=payment["id"], amount_cents=amount)
        return "amount_mismatch", []
    response_code = ev.payload.get("responseCode")
    return "credited", credit_statements(
        payment_id=payment["id"],
        user_id=payment["user_id"],
        amount_cents=amount,
        transaction_id=ev.transaction_id,
        response_code=None if response_code is None else str(response_code)[:8],
        now_ms=ev.now_ms,
    )


def _reversal_statements(ev: _Event, payment: dict[str, Any], amount: int, final_status: str) -> list[Statement]:
    return [
        *ledger.transfer(
            transfer_id=new_id(),
            key=f"webhook:{ev.notification_id}",
            kind="deposit_reversal",
            legs=[
                ledger.Leg(ledger.wallet_of(payment["user_id"]), -amount),
                ledger.Leg(ledger.GATEWAY_CLEARING, amount),
            ],
            now_ms=ev.now_ms,
            reference_type="payment",
            reference_id=payment["id"],
        ),
        # reversed_cents <= amount_cents is a CHECK: an over-reversal aborts the batch.
        sql(
            """UPDATE payments
               SET reversed_cents = reversed_cents + ?,
                   status = CASE WHEN reversed_cents + ? = amount_cents THEN ? ELSE status END,
                   updated_at_ms = ?
               WHERE id = ?""",
            amount,
            amount,
            final_status,
            ev.now_ms,
            payment["id"],
        ),
    ]


async def _on_reversal(db: Database, ev: _Event, payment: dict[str, Any] | None) -> tuple[str, list[Statement]]:
    if payment is None:
        return "unknown_transaction", []
    is_void = ev.event_type == VOID
    if payment["status"] in ("pending", "unknown") and is_void:
        # Voided before we ever credited it: nothing to reverse, and a late
        # capture event must not credit it.
        return "voided_uncredited", [
            sql(
                "UPDATE payments SET status = 'voided', updated_at_ms = ? WHERE id = ? AND status IN ('pending', 'unknown')",
                ev.now_ms,
                payment["id"],
            )
        ]
    if payment["status"] != "approved":
        return "not_reversible", []
    # What our wallet refunds and chargebacks took is gone already (migration
    # 0092 bounds the sum in SQL too): a reversal gets at most the rest.
    remaining = (
        payment["amount_cents"] - payment["reversed_cents"] - payment["refunded_cents"] - payment["charged_back_cents"]
    )
    amount = remaining if is_void else anet.decimal_to_cents(ev.payload.get("authAmount"))
    if amount is None or not 0 < amount <= remaining:
        logs.warning("webhook_reversal_amount", payment_id=payment["id"], amount_cents=amount)
        return "amount_invalid", []
    return "reversed", _reversal_statements(ev, payment, amount, "voided" if is_void else "refunded")


async def _on_fraud_declined(db: Database, ev: _Event, payment: dict[str, Any] | None) -> tuple[str, list[Statement]]:
    if payment is None:
        return "unknown_transaction", []
    if payment["status"] != "pending":
        return "not_pending", []
    return "declined", [
        sql(
            "UPDATE payments SET status = 'declined', updated_at_ms = ? WHERE id = ? AND status = 'pending'",
            ev.now_ms,
            payment["id"],
        )
    ]


async def receive(rc: RequestContext) -> Reply:
    body = await _verified_body(rc)
    ev = _Event(_parse_event(body), rc.clock.now_ms())
    if ev.event_type in CAPTURE_EVENTS:
        handler = _on_capture
    elif ev.event_type in (REFUND, VOID):
        handler = _on_reversal
    elif ev.event_type == FRAUD_DECLINED:
        handler = _on_fraud_declined
    else:
        handler = None
    outcome, payment_id = "ignored_event", None
    for _attempt in range(2):
        payment = await _find_payment(rc.db, ev.payload) if handler is not None else None
        payment_id = None if payment is None else int(payment["id"])
        outcome, effect = await handler(rc.db, ev, payment) if handler is not None else ("ignored_event", [])
        try:
            outcome = await _apply(rc.db, ev, outcome, payment_id, effect)
            break
        except (UniqueViolation, CheckViolation, TriggerAbort) as exc:
            # The payment moved between our read and the batch (the deposit
            # request settled it, or a concurrent event reversed it): the batch
            # rolled back; read it again and decide again.
            logs.info("webhook_retry_after_race", notification_id=ev.notification_id, error=type(exc).__name__)
    else:
        outcome = await _apply(rc.db, ev, "conflict", payment_id, [])
    logs.info("webhook", request_id=rc.request_id, event_type=ev.event_type, outcome=outcome, payment_id=payment_id)
    return Reply({"received": True, "outcome": outcome})


SCHEMAS: dict[str, Any] = {
    "WebhookReceipt": {
        "type": "object",
        "required": ["received", "outcome"],
        "properties": {"received": {"type": "boolean"}, "outcome": {"type": "string"}},
    },
}

ROUTES = [
    Route(
        "POST",
        "/v1/webhooks/authorizenet",
        receive,
        "Authorize.Net event notifications (X-ANET-Signature: sha512=HMAC-SHA512 of the raw body)",
        auth="none",
        primary=True,
        responses={200: "WebhookReceipt"},
        problems=(401, 413),
        tag="webhooks",
    ),
]
