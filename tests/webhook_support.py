"""Authorize.Net webhook events, signed by the stand-in (node:crypto) the way
Authorize.Net signs them, so the Worker's verification is checked against an
independent implementation."""

import json
import uuid
from typing import Any

import local_runtime

from support import Client, Resp

PATH = "/v1/webhooks/authorizenet"


def event(
    event_type: str,
    *,
    trans_id: str,
    invoice: str | None = None,
    amount_cents: int | None = None,
    response_code: int = 1,
) -> str:
    payload: dict[str, Any] = {"responseCode": response_code, "authCode": "QWE123", "avsResponse": "Y"}
    if amount_cents is not None:
        payload["authAmount"] = amount_cents / 100
    if invoice is not None:
        payload["invoiceNumber"] = invoice
    payload.update({"entityName": "transaction", "id": trans_id})
    body = {
        "notificationId": str(uuid.uuid4()),
        "eventType": event_type,
        "eventDate": "2026-11-27T00:00:00.0609961Z",
        "webhookId": str(uuid.uuid4()),
        "payload": payload,
    }
    return json.dumps(body, separators=(",", ":"))


def sign(body: str, key: str | None = None) -> str:
    control = local_runtime.anetControl
    return str(control.signWebhook(body) if key is None else control.signWebhook(body, key))


async def post_event(body: str, signature: str | None = "sign", headers: dict[str, str] | None = None) -> Resp:
    all_headers = {"content-type": "application/json", **(headers or {})}
    if signature == "sign":
        signature = sign(body)
    if signature is not None:
        all_headers["x-anet-signature"] = signature
    return await Client().request("POST", PATH, body=body, headers=all_headers)
