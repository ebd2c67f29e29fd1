"""`POST /v1/webhooks/paypal`: PayPal's payout item notifications.

Authentication is PayPal's own word: the five PAYPAL-* transmission headers
and the body as received go to PayPal's verify-webhook-signature API
(paypal.verify_webhook), and nothing changes unless it answers SUCCESS
(FAILURE: 401; PayPal unreachable: 503, and PayPal delivers again, up to 25
times over 3 days). Why postback and not local verification: see
docs/PAYPAL.md (WebCrypto can check the RSA signature but not the
certificate's chain to PayPal, so a local check would trust whatever
certificate the notification's own header points to).

Before asking PayPal, one D1 read answers what needs no trust: an event type
we do not act on, an event already applied (its id is recorded in the batch
that applied it) and an event naming no payout of ours get 200 and change
nothing. A verified event is applied in ONE batch with its record
(paypal_webhook_events, keyed by the event id, so a redelivery racing this
one fails on the key): the payout's move (payout_flow.move_for) and its money.
The item must match the payout (our id as sender_item_id, its amount, its
PayPal batch once known); one that does not is recorded as `mismatch` and
moves nothing.
"""

import json
from typing import Any

from . import logs, payout_flow, payout_send, paypal
from .db import TriggerAbort, UniqueViolation, sql
from .errors import Problem, bad_request, service_unavailable
from .ids import parse_id
from .requests import RequestContext
from .responses import Reply
from .routing import Route

PATH = "/v1/webhooks/paypal"
MAX_WEBHOOK_BYTES = 64 * 1024
MOVE_ATTEMPTS = 2

_READ_EVENT = "SELECT outcome FROM paypal_webhook_events WHERE event_id = ?"
_READ_PAYOUT = f"SELECT {payout_flow.PAYOUT_COLUMNS} FROM payouts WHERE id = ?"  # noqa: S608 - constant columns


def _invalid_signature() -> Problem:
    return Problem(401, "invalid_signature", "Unauthorized", "The notification's PayPal signature did not verify.")


def _reply(outcome: str) -> Reply:
    return Reply({"received": True, "outcome": outcome})


async def _body(rc: RequestContext) -> tuple[bytes, dict[str, Any]]:
    declared = rc.header("content-length")
    too_large = Problem(
        413, "body_too_large", "Request body too large", f"Webhooks are limited to {MAX_WEBHOOK_BYTES} bytes."
    )
    if declared is not None and declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
        raise too_large
    raw = await rc.body_bytes()
    if len(raw) > MAX_WEBHOOK_BYTES:
        raise too_large
    try:
        event = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise bad_request("The body is not JSON.", "body") from None
    if not isinstance(event, dict):
        raise bad_request("The body is not a JSON object.", "body")
    for name in ("id", "event_type"):
        value = event.get(name)
        if not isinstance(value, str) or not 1 <= len(value) <= 64:
            raise bad_request(f"'{name}' must be a string of 1-64 characters.", name)
    return raw, event


def _label(move: payout_flow.Move) -> str:
    if move.money == "settle":
        return "settled"
    if move.money is not None:
        return "returned"
    return move.status or "no_change"


async def receive(rc: RequestContext) -> Reply:
    headers = paypal.webhook_headers(rc.header)
    if headers is None:
        raise _invalid_signature()  # before the body: nothing unsigned is even parsed
    raw, event = await _body(rc)
    outcome = payout_flow.outcome_of_event(event["event_type"])
    resource = paypal.obj(event.get("resource"))
    item = paypal.parse_item(resource)
    payout_id = parse_id(item.sender_item_id) if item is not None and item.sender_item_id else None
    if outcome is None or item is None or payout_id is None:
        return _reply("ignored")  # nothing of ours to change: no need to ask PayPal
    if not (rc.settings.paypal_webhook_id and rc.settings.paypal_endpoint):
        logs.error("paypal_webhook_misconfigured", request_id=rc.request_id)
        raise Problem(500, "misconfigured", "Server misconfigured", "PayPal webhooks are not configured.")
    recorded, found = await rc.db.batch([sql(_READ_EVENT, event["id"]), sql(_READ_PAYOUT, payout_id)])
    if recorded.rows:
        return _reply("duplicate")
    if not found.rows:
        return _reply("ignored")
    try:
        verified = await paypal.verify_webhook(rc.settings, headers, raw.decode("utf-8"))
    except paypal.PayPalUnavailable:
        raise service_unavailable("PayPal could not confirm the notification now; deliver it again.", 30) from None
    if not verified:
        logs.warning("paypal_webhook_bad_signature", request_id=rc.request_id, event_type=event["event_type"])
        raise _invalid_signature()
    batch_id = resource.get("payout_batch_id") if isinstance(resource.get("payout_batch_id"), str) else None
    payout = found.rows[0]
    now_ms = rc.clock.now_ms()
    for _attempt in range(MOVE_ATTEMPTS):
        matches = item.amount_cents == int(payout["amount_cents"]) and (
            payout["paypal_batch_id"] is None or batch_id == payout["paypal_batch_id"]
        )
        if matches:
            statements, move = payout_flow.item_statements(payout, item, outcome, now_ms, batch_id)
            label = _label(move)
        else:
            logs.error("paypal_webhook_mismatch", payout_id=payout_id, event_type=event["event_type"])
            statements, label = [], "mismatch"
        record = sql(
            """INSERT INTO paypal_webhook_events (event_id, event_type, payout_id, outcome, received_at_ms)
               VALUES (?, ?, ?, ?, ?)""",
            event["id"],
            event["event_type"],
            payout_id,
            label,
            now_ms,
        )
        try:
            await rc.db.batch([record, *statements])
        except UniqueViolation as exc:
            if "paypal_webhook_events.event_id" in exc.columns:
                return _reply("duplicate")
            if not payout_send.moved_by_another(exc):
                raise
        except TriggerAbort as exc:
            if not payout_send.moved_by_another(exc):
                raise
        else:
            logs.info("paypal_webhook_applied", payout_id=payout_id, event_type=event["event_type"], outcome=label)
            return _reply(label)
        # The payout moved since it was read (another notification, the cron): plan again on it.
        reloaded = await payout_flow.load(rc.db, payout_id)
        assert reloaded is not None, "payouts are never deleted"
        payout = reloaded
    raise service_unavailable("The payout is changing; deliver the notification again.")


SCHEMAS: dict[str, Any] = {
    "PaypalWebhookResult": {
        "type": "object",
        "required": ["received", "outcome"],
        "properties": {
            "received": {"type": "boolean", "enum": [True]},
            "outcome": {
                "type": "string",
                "enum": ["settled", "returned", "unclaimed", "no_change", "mismatch", "duplicate", "ignored"],
            },
        },
    },
}

ROUTES = [
    Route(
        "POST",
        PATH,
        receive,
        "PayPal Payouts item notifications (verified with PayPal before they change anything)",
        auth="webhook",
        primary=True,
        responses={200: "PaypalWebhookResult"},
        problems=(400, 401, 413, 503),
        tag="webhooks",
    ),
]
