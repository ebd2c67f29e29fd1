"""PayPal Payouts REST client over `workers.fetch`: the OAuth token, the
batch payout (one item per payout), the batch lookup and the webhook
signature verification. Wire facts (docs/PAYPAL.md has each with its source):

- Token: `POST /v1/oauth2/token`, HTTP Basic `client_id:secret`, form body
  `grant_type=client_credentials`; the answer carries `access_token` and
  `expires_in` (seconds). It is reused until shortly before it expires (one
  cache per isolate), and fetched again once if a call answers 401.
- Create: `POST /v1/payments/payouts` with `sender_batch_header.sender_batch_id`
  = our payout id and one item (`recipient_type` EMAIL | PAYPAL_ID, `amount`
  `{"value": "12.34", "currency": "USD"}` as a decimal STRING, `receiver`,
  `sender_item_id` = our payout id, `note`). 201: `batch_header.payout_batch_id`
  and `batch_status` (PENDING when it passes the first checks). PayPal refuses a
  `sender_batch_id` used in the last 30 days: 400 `USER_BUSINESS_ERROR`,
  `details[].field` `SENDER_BATCH_ID`, issue "Batch with given sender_batch_id
  already exists", `details[].link[].href` = the original batch. After a 5xx or
  no answer the same request is safe to send again: it pays at most once.
- Lookup: `GET /v1/payments/payouts/{payout_batch_id}`: `batch_header` and
  `items[]` (`payout_item_id`, `transaction_status` SUCCESS | FAILED | PENDING |
  UNCLAIMED | RETURNED | ONHOLD | BLOCKED | REFUNDED | REVERSED, `payout_item`
  with `sender_item_id` and `amount`, `errors.name`).
- Webhooks are verified by PayPal itself: `POST /v1/notifications/verify-webhook-signature`
  with the five PAYPAL-* headers' values, our `webhook_id` and the event as
  received (`webhook_event`: the raw body spliced in, never re-encoded, since
  the signature covers a CRC32 of the body); `verification_status` SUCCESS | FAILURE.

Receivers and tokens never reach a log: failures log the HTTP status, PayPal's
error `name` and its `debug_id`.
"""

import base64
import json
import time
from dataclasses import dataclass
from typing import Any, Literal

import js
from workers import fetch

from . import logs
from .anet import cents_to_decimal, decimal_to_cents
from .config import Settings

MAX_RESPONSE_BYTES = 256 * 1024
TOKEN_MARGIN_S = 60  # a token this close to its end is fetched anew
MAX_NAME_CHARS = 64
EMAIL_SUBJECT = "You have a payout from Clairvora"
ITEM_NOTE = "Clairvora advisor earnings"
WEBHOOK_HEADERS = (
    ("auth_algo", "paypal-auth-algo"),
    ("cert_url", "paypal-cert-url"),
    ("transmission_id", "paypal-transmission-id"),
    ("transmission_sig", "paypal-transmission-sig"),
    ("transmission_time", "paypal-transmission-time"),
)

RecipientType = Literal["EMAIL", "PAYPAL_ID"]
CreateOutcome = Literal["created", "duplicate", "refused", "unknown"]


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP exchange: `status` None when no answer could be read."""

    status: int | None
    body: Any = None
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class CreateResult:
    outcome: CreateOutcome
    batch_id: str | None = None
    batch_status: str | None = None
    error_name: str | None = None
    http_status: int | None = None


@dataclass(frozen=True, slots=True)
class Item:
    """The one item of one of our batches, as PayPal reports it."""

    item_id: str | None
    transaction_status: str | None
    sender_item_id: str | None
    amount_cents: int | None
    error_name: str | None


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: str
    batch_status: str | None
    item: Item | None


class PayPalUnavailable(Exception):
    """No usable answer (transport, timeout, 5xx, 429, unreadable, no token)."""


def obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _name(value: Any) -> str | None:
    return value[:MAX_NAME_CHARS] if isinstance(value, str) and value else None


async def _exchange(url: str, *, method: str, headers: dict[str, str], body: str | None, timeout_ms: int) -> Answer:
    options: dict[str, Any] = {"method": method, "headers": headers, "signal": js.AbortSignal.timeout(timeout_ms)}
    if body is not None:
        options["body"] = body
    try:
        response = await fetch(url, **options)
        raw = await response.bytes()
    except Exception as exc:  # noqa: BLE001 - every transport failure is "no answer"
        name, text = type(exc).__name__, str(exc).lower()
        timed_out = "timeout" in text or "abort" in text or "Timeout" in name or "Abort" in name
        logs.warning("paypal_transport_failure", error_type=name, timed_out=timed_out, method=method)
        return Answer(None, timed_out=timed_out)
    status = int(response.status)
    if len(raw) > MAX_RESPONSE_BYTES:
        logs.warning("paypal_answer_too_large", status=status, size=len(raw))
        return Answer(None)
    try:
        parsed = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError):
        parsed = None
    return Answer(status, parsed)


# (endpoint, client id) -> (access token, wall-clock second it stops being used)
_TOKENS: dict[tuple[str, str], tuple[str, float]] = {}


def forget_tokens() -> None:
    _TOKENS.clear()


async def access_token(settings: Settings, *, refresh: bool = False) -> str:
    """A valid OAuth token: the cached one, else a new one (PayPalUnavailable)."""
    client_id, secret = settings.paypal_client_id, settings.paypal_client_secret
    if not (settings.paypal_endpoint and client_id and secret):
        raise PayPalUnavailable("PayPal is not configured")
    cache_key = (settings.paypal_endpoint, client_id)
    cached = _TOKENS.get(cache_key)
    if cached is not None and not refresh and cached[1] > time.time():
        return cached[0]
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    answer = await _exchange(
        settings.paypal_endpoint + "/v1/oauth2/token",
        method="POST",
        headers={
            "authorization": f"Basic {basic}",
            "content-type": "application/x-www-form-urlencoded",
            "accept": "application/json",
        },
        body="grant_type=client_credentials",
        timeout_ms=settings.paypal_timeout_ms,
    )
    body = obj(answer.body)
    token, expires_in = body.get("access_token"), body.get("expires_in")
    if answer.status != 200 or not isinstance(token, str) or not token or not isinstance(expires_in, int):
        logs.error("paypal_token_refused", status=answer.status, error=_name(body.get("error")))
        raise PayPalUnavailable("no token")
    _TOKENS[cache_key] = (token, time.time() + max(expires_in - TOKEN_MARGIN_S, 0))
    return token


async def _call(settings: Settings, method: str, path: str, body: str | None = None) -> Answer:
    """An authorized call; a 401 (an expired or revoked token) fetches a new token once."""
    for attempt in range(2):
        token = await access_token(settings, refresh=attempt > 0)
        headers = {"authorization": f"Bearer {token}", "accept": "application/json"}
        if body is not None:
            headers["content-type"] = "application/json"
        answer = await _exchange(
            settings.paypal_endpoint + path,
            method=method,
            headers=headers,
            body=body,
            timeout_ms=settings.paypal_timeout_ms,
        )
        if answer.status != 401:
            return answer
        _TOKENS.pop((settings.paypal_endpoint, settings.paypal_client_id or ""), None)
    return answer


def payout_request(payout_id: int, amount_cents: int, recipient_type: RecipientType, receiver: str) -> dict[str, Any]:
    """The create body: one batch of one item, both named by our payout id."""
    ours = str(payout_id)
    return {
        "sender_batch_header": {
            "sender_batch_id": ours,
            "email_subject": EMAIL_SUBJECT,
            "recipient_type": recipient_type,
        },
        "items": [
            {
                "recipient_type": recipient_type,
                "amount": {"value": cents_to_decimal(amount_cents), "currency": "USD"},
                "note": ITEM_NOTE,
                "sender_item_id": ours,
                "receiver": receiver,
            }
        ],
    }


def _log_refusal(event: str, answer: Answer) -> str | None:
    body = obj(answer.body)
    name = _name(body.get("name"))
    logs.warning(event, status=answer.status, error=name, debug_id=_name(body.get("debug_id")))
    return name


def duplicate_batch_id(body: Any) -> str | None:
    """The original batch named by a duplicate-sender_batch_id refusal, else None."""
    if not isinstance(body, dict) or body.get("name") != "USER_BUSINESS_ERROR":
        return None
    details = _list(body.get("details"))
    for detail in details:
        if not isinstance(detail, dict) or str(detail.get("field", "")).upper() != "SENDER_BATCH_ID":
            continue
        links = _list(detail.get("link"))
        for link in [*links, *(_list(body.get("links")))]:
            href = link.get("href") if isinstance(link, dict) else None
            if isinstance(href, str) and "/v1/payments/payouts/" in href:
                batch_id = href.split("/v1/payments/payouts/", 1)[1].split("?", 1)[0].split("/", 1)[0]
                if batch_id.isascii() and batch_id.isalnum() and len(batch_id) <= MAX_NAME_CHARS:
                    return batch_id
        return ""  # a duplicate, but the original is not named: the caller must not guess
    return None


async def create_payout(settings: Settings, request_body: dict[str, Any]) -> CreateResult:
    """POST the batch. `unknown`: no usable answer, so PayPal may or may not hold
    the batch (the same body is safe to send again); `refused`: a 4xx, nothing made."""
    try:
        answer = await _call(settings, "POST", "/v1/payments/payouts", json.dumps(request_body, separators=(",", ":")))
    except PayPalUnavailable:
        return CreateResult("unknown")
    body = obj(answer.body)
    if answer.status == 201:
        header = obj(body.get("batch_header"))
        batch_id = _name(header.get("payout_batch_id"))
        if batch_id is not None:
            return CreateResult("created", batch_id, _name(header.get("batch_status")), http_status=201)
        return CreateResult("unknown", http_status=201)
    if answer.status is None or answer.status >= 500 or answer.status in (401, 408, 429):
        _log_refusal("paypal_create_unavailable", answer)
        return CreateResult("unknown", http_status=answer.status)
    original = duplicate_batch_id(body)
    if original is not None:
        # "" is a duplicate whose original the answer does not name: still unknown to us.
        return CreateResult("duplicate", original or None, error_name="USER_BUSINESS_ERROR", http_status=answer.status)
    name = _log_refusal("paypal_create_refused", answer)
    return CreateResult("refused", error_name=name or f"HTTP_{answer.status}", http_status=answer.status)


def parse_item(value: Any) -> Item | None:
    """A payout item (in a batch lookup, or a webhook's `resource`)."""
    if not isinstance(value, dict):
        return None
    inner = obj(value.get("payout_item"))
    amount = obj(inner.get("amount"))
    errors = obj(value.get("errors"))
    return Item(
        item_id=_name(value.get("payout_item_id")),
        transaction_status=_name(value.get("transaction_status")),
        sender_item_id=_name(inner.get("sender_item_id")),
        amount_cents=decimal_to_cents(amount.get("value")) if amount.get("currency") == "USD" else None,
        error_name=_name(errors.get("name")),
    )


async def get_batch(settings: Settings, batch_id: str) -> Batch | None:
    """The batch and its (first) item; None when PayPal does not know the id.
    PayPalUnavailable when it cannot be read now."""
    assert batch_id.isascii() and batch_id.isalnum(), "a PayPal batch id"
    answer = await _call(settings, "GET", f"/v1/payments/payouts/{batch_id}")
    if answer.status == 404:
        return None
    body = answer.body if isinstance(answer.body, dict) else None
    if answer.status != 200 or body is None:
        _log_refusal("paypal_lookup_failed", answer)
        raise PayPalUnavailable("lookup failed")
    header = obj(body.get("batch_header"))
    items = _list(body.get("items"))
    return Batch(batch_id, _name(header.get("batch_status")), parse_item(items[0]) if items else None)


def webhook_headers(get: Any) -> dict[str, str] | None:
    """The five PAYPAL-* transmission headers (field name -> value), None if any is missing."""
    out = {}
    for field, header in WEBHOOK_HEADERS:
        value = get(header)
        if not isinstance(value, str) or not value.strip() or len(value) > 2000:
            return None
        out[field] = value.strip()
    return out


async def verify_webhook(settings: Settings, headers: dict[str, str], raw_body: str) -> bool:
    """PayPal's word on a notification: True for SUCCESS, False for FAILURE;
    PayPalUnavailable when it cannot be asked now (PayPal retries the delivery)."""
    if not settings.paypal_webhook_id:
        raise PayPalUnavailable("PAYPAL_WEBHOOK_ID is not set")
    fields = json.dumps({**headers, "webhook_id": settings.paypal_webhook_id}, separators=(",", ":"))
    # The event exactly as received: re-encoding it could change the bytes the signature covers.
    body = fields[:-1] + ',"webhook_event":' + raw_body + "}"
    answer = await _call(settings, "POST", "/v1/notifications/verify-webhook-signature", body)
    status = answer.body.get("verification_status") if isinstance(answer.body, dict) else None
    if answer.status == 200 and status in ("SUCCESS", "FAILURE"):
        return bool(status == "SUCCESS")
    if answer.status is not None and 400 <= answer.status < 500 and answer.status not in (401, 408, 429):
        _log_refusal("paypal_verify_refused", answer)
        return False
    _log_refusal("paypal_verify_unavailable", answer)
    raise PayPalUnavailable("verification unavailable")
