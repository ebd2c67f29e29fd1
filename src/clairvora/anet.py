"""Authorize.Net JSON API client: one `createTransactionRequest`
(authCaptureTransaction with an Accept.js opaque token) over `workers.fetch`.

Wire facts this code relies on (shared docs/third-parties.md sections 1-2):
- the JSON is translated to XML and validated against the XSD, so KEY ORDER
  MATTERS: the dicts below are built in schema order (Python keeps insertion
  order, json.dumps writes it);
- `amount` is an xs:decimal sent as a string ("12.50"), never a float;
- `order.invoiceNumber` (<= 20 chars) carries our payment id, so a webhook
  (whose payload repeats invoiceNumber) can be matched to our payment even
  when we never learned the gateway's transId (timeout);
- responses start with a UTF-8 BOM and are HTTP 200 even on errors;
  `transactionResponse.responseCode` is a string: "1" approved, "2" declined,
  "3" error, "4" held for review;
- an Accept.js token is single use and lives 15 minutes: a used one is
  `E00114 "Invalid OTS Token."`, an expired one `E00115` (which code expiry
  really gets is unconfirmed: both mean "get a new token", nothing charged);
- a transaction equal to one processed within the duplicate window (same
  card, amount, invoiceNumber, customer id, ... and window value) is refused
  with responseCode "3", error 11. Our invoiceNumber is the payment id, unique
  per deposit attempt, so two deposits are never duplicates of each other,
  while a second delivery of the SAME request is. We send `duplicateWindow`
  because only then does the duplicate answer name the original transaction
  (its transId, and its authCode if it was approved).

Card data never passes through here: only the opaque token, which is neither
stored nor logged.

Transaction Reporting (the Transaction Details API, which the merchant enables
in the Merchant Interface) is how a deposit whose answer we never recorded is
found again (deposit_resolution.py). The API has NO search by invoiceNumber
(the Merchant Interface has one; getTransactionListForCustomerRequest takes a
CIM customerProfileId, which our deposits do not have), so our invoice is found
in the lists: `getUnsettledTransactionListRequest` (every transaction not yet
settled, declined ones included; sorted by submitTimeUTC, newest first, 1000 a
page, `paging.offset` is the PAGE number) and, for what settled since,
`getSettledBatchListRequest` (settlement dates at most 31 days apart) and
`getTransactionListRequest` per batch. A summary carries transId,
submitTimeUTC, transactionStatus, invoiceNumber and settleAmount (a JSON
number). Nothing found is resultCode "Ok" with I00004 "No records found." and
no list.
"""

import calendar
import json
import time
from dataclasses import dataclass
from typing import Any, Literal

import js
from workers import fetch

from . import logs

Outcome = Literal["approved", "declined", "held", "error", "token_invalid", "duplicate", "unknown", "not_processed"]
MAX_RESPONSE_BYTES = 64 * 1024
MAX_REPORT_BYTES = 2 * 1024 * 1024  # a page of 1000 summaries is ~400 KB
_BOM = "\ufeff"
# The Accept.js token's life (15 minutes): a request can only charge the card
# while its token is still valid, so a deposit claimed longer ago than this can
# no longer be charged by anything still in flight.
ACCEPT_TOKEN_LIFE_S = 900
# A second delivery of one request can only charge the card while its token is valid.
DUPLICATE_WINDOW_S = ACCEPT_TOKEN_LIFE_S
_TOKEN_ERRORS = ("E00114", "E00115")  # invalid (e.g. already used) / expired OTS token
_DUPLICATE_ERROR = "11"


@dataclass(frozen=True, slots=True)
class GatewayResult:
    """What the gateway said. `unknown` means we cannot know whether the card
    was charged (timeout, transport failure, unreadable answer). `duplicate`:
    refused as a second copy of a transaction processed earlier, whose
    transaction id (when the gateway gives it) is `transaction_id`."""

    outcome: Outcome
    transaction_id: str | None = None
    response_code: str | None = None
    error_code: str | None = None
    error_text: str | None = None
    timed_out: bool = False


def cents_to_decimal(cents: int) -> str:
    assert cents > 0
    return f"{cents // 100}.{cents % 100:02d}"


def decimal_to_cents(value: Any) -> int | None:
    """A webhook's authAmount (JSON number like 45.0 or string "45.00") -> cents, exactly."""
    text = value if isinstance(value, str) else repr(value) if isinstance(value, (int, float)) else None
    if text is None or isinstance(value, bool):
        return None
    whole, _, frac = text.strip().partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(whole) > 12:
        return None
    frac = frac.rstrip("0")
    if len(frac) > 2:
        return None
    return int(whole) * 100 + int(frac.ljust(2, "0") or "0")


def auth_capture_request(
    *,
    login_id: str,
    transaction_key: str,
    amount_cents: int,
    data_descriptor: str,
    data_value: str,
    invoice_number: str,
    customer_id: str,
    ref_id: str,
) -> dict[str, Any]:
    """The request body, keys in XSD order (envelope, then transactionRequest)."""
    assert len(invoice_number) <= 20 and len(ref_id) <= 20 and len(customer_id) <= 20
    return {
        "createTransactionRequest": {
            "merchantAuthentication": {"name": login_id, "transactionKey": transaction_key},
            "refId": ref_id,
            "transactionRequest": {
                "transactionType": "authCaptureTransaction",
                "amount": cents_to_decimal(amount_cents),
                "payment": {"opaqueData": {"dataDescriptor": data_descriptor, "dataValue": data_value}},
                "order": {"invoiceNumber": invoice_number, "description": "Clairvora wallet deposit"},
                "customer": {"id": customer_id},
                "transactionSettings": {
                    "setting": [{"settingName": "duplicateWindow", "settingValue": str(DUPLICATE_WINDOW_S)}]
                },
            },
        }
    }


def classify(body: Any) -> GatewayResult:
    """A parsed response -> approved / declined / held / error (pure; see tests)."""
    if not isinstance(body, dict):
        return GatewayResult("unknown", error_text="response is not an object")
    messages: dict[str, Any] = body["messages"] if isinstance(body.get("messages"), dict) else {}
    result_code = messages.get("resultCode")
    message_list = messages.get("message") if isinstance(messages.get("message"), list) else []
    first = message_list[0] if message_list and isinstance(message_list[0], dict) else {}
    tr = body.get("transactionResponse") if isinstance(body.get("transactionResponse"), dict) else None
    response_code = str(tr.get("responseCode")) if tr and tr.get("responseCode") is not None else None
    trans_id = str(tr.get("transId")) if tr and tr.get("transId") not in (None, "", "0") else None
    errors = tr.get("errors") if tr and isinstance(tr.get("errors"), list) else []
    error = errors[0] if errors and isinstance(errors[0], dict) else {}
    error_code = str(error.get("errorCode") or first.get("code") or "") or None
    error_text = str(error.get("errorText") or first.get("text") or "")[:200] or None
    if result_code == "Ok" and response_code == "1" and trans_id:
        return GatewayResult("approved", trans_id, response_code)
    if result_code == "Ok" and response_code == "2":
        return GatewayResult("declined", trans_id, response_code, error_code, error_text)
    if result_code == "Ok" and response_code == "4" and trans_id:
        return GatewayResult("held", trans_id, response_code, error_code, error_text)
    if result_code == "Error" and first.get("code") in _TOKEN_ERRORS:
        # The token (not the card) was refused before any transaction existed.
        return GatewayResult("token_invalid", None, response_code, str(first["code"]), error_text)
    if response_code == "3" and error_code == _DUPLICATE_ERROR:
        return GatewayResult("duplicate", trans_id, response_code, error_code, error_text)
    if result_code in ("Ok", "Error"):
        # responseCode "3", or an API-level error (E00007 bad credentials, E00003
        # schema, E00114 invalid token): the gateway answered and did not charge.
        return GatewayResult("error", trans_id, response_code, error_code, error_text)
    return GatewayResult("unknown", error_text="no resultCode in response")


def parse_response(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace")
    if text.startswith(_BOM):
        text = text[1:]
    return json.loads(text)


async def create_transaction(*, endpoint: str, timeout_ms: int, request_body: dict[str, Any]) -> GatewayResult:
    """POST the request; any failure to get a readable answer is `unknown`
    (the card may or may not have been charged)."""
    payload = json.dumps(request_body, separators=(",", ":"))
    try:
        response = await fetch(
            endpoint,
            method="POST",
            headers={"content-type": "application/json", "accept": "application/json"},
            body=payload,
            signal=js.AbortSignal.timeout(timeout_ms),
        )
        raw = await response.bytes()
    except Exception as exc:  # noqa: BLE001 - every transport failure (JsException, OSError, abort) is "unknown"
        name = type(exc).__name__
        text = str(exc)
        timed_out = "timeout" in text.lower() or "abort" in text.lower() or "Timeout" in name or "Abort" in name
        logs.warning("anet_transport_failure", error_type=name, timed_out=timed_out)
        return GatewayResult("unknown", error_text="timeout" if timed_out else "transport failure", timed_out=timed_out)
    if int(response.status) != 200 or len(raw) > MAX_RESPONSE_BYTES:
        logs.warning("anet_bad_http_status", status=int(response.status), size=len(raw))
        return GatewayResult("unknown", error_text=f"HTTP {int(response.status)}")
    try:
        body = parse_response(raw)
    except ValueError:
        logs.warning("anet_unreadable_response", size=len(raw))
        return GatewayResult("unknown", error_text="unreadable response")
    return classify(body)


# --- Transaction Reporting -----------------------------------------------------

REPORT_PAGE_SIZE = 1000  # the API's maximum
MAX_BATCH_RANGE_DAYS = 31  # getSettledBatchListRequest's widest date range


class ReportingError(Exception):
    """The gateway's lists could not be read (transport, HTTP, unreadable, or an
    API error such as E00007 credentials or reporting not enabled). `code` is the
    API's message code when it answered (E00040: no such transaction)."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.code = code


@dataclass(frozen=True, slots=True)
class TransactionSummary:
    trans_id: str
    status: str
    invoice_number: str | None
    amount_cents: int | None
    submit_time_ms: int | None


def _auth(login_id: str, transaction_key: str) -> dict[str, str]:
    return {"name": login_id, "transactionKey": transaction_key}


def _sorted_paged(page: int) -> dict[str, Any]:
    assert 1 <= page <= 100_000
    return {
        "sorting": {"orderBy": "submitTimeUTC", "orderDescending": True},
        "paging": {"limit": str(REPORT_PAGE_SIZE), "offset": str(page)},
    }


def unsettled_list_request(*, login_id: str, transaction_key: str, page: int) -> dict[str, Any]:
    """Every unsettled transaction, newest first, one page (keys in XSD order)."""
    return {
        "getUnsettledTransactionListRequest": {
            "merchantAuthentication": _auth(login_id, transaction_key),
            **_sorted_paged(page),
        }
    }


def utc_datetime(ms: int) -> str:
    """xs:dateTime in UTC, whole seconds: 2026-11-27T00:31:21Z."""
    t = time.gmtime(ms // 1000)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)  # noqa: UP031


def settled_batch_list_request(*, login_id: str, transaction_key: str, first_ms: int, last_ms: int) -> dict[str, Any]:
    assert 0 <= last_ms - first_ms <= MAX_BATCH_RANGE_DAYS * 86_400_000
    return {
        "getSettledBatchListRequest": {
            "merchantAuthentication": _auth(login_id, transaction_key),
            "firstSettlementDate": utc_datetime(first_ms),
            "lastSettlementDate": utc_datetime(last_ms),
        }
    }


def transaction_list_request(*, login_id: str, transaction_key: str, batch_id: str, page: int) -> dict[str, Any]:
    assert batch_id.isascii() and batch_id.isdigit()
    return {
        "getTransactionListRequest": {
            "merchantAuthentication": _auth(login_id, transaction_key),
            "batchId": batch_id,
            **_sorted_paged(page),
        }
    }


def parse_utc_datetime(value: Any) -> int | None:
    """submitTimeUTC ("2015-02-16T03:34:43Z", maybe with fractions) -> ms."""
    if not isinstance(value, str):
        return None
    text = value.strip().removesuffix("Z")
    whole, _, fraction = text.partition(".")
    try:
        t = time.strptime(whole, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    millis = int((fraction + "000")[:3]) if fraction.isdigit() else 0
    return calendar.timegm(t) * 1000 + millis


def _summary(item: Any) -> TransactionSummary | None:
    if not isinstance(item, dict):
        return None
    trans_id, status = item.get("transId"), item.get("transactionStatus")
    if not isinstance(trans_id, (str, int)) or isinstance(trans_id, bool) or not isinstance(status, str):
        return None
    invoice = item.get("invoiceNumber")
    return TransactionSummary(
        trans_id=str(trans_id),
        status=status,
        invoice_number=invoice if isinstance(invoice, str) else None,
        amount_cents=decimal_to_cents(item.get("settleAmount")),
        submit_time_ms=parse_utc_datetime(item.get("submitTimeUTC")),
    )


def _listed(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name)
    if isinstance(value, dict):  # one element, as the JSON translation of XML may give it
        inner = next(iter(value.values()), None) if len(value) == 1 else value
        value = inner if isinstance(inner, list) else [inner]
    return value if isinstance(value, list) else []


def summaries(body: dict[str, Any]) -> list[TransactionSummary]:
    return [s for s in (_summary(item) for item in _listed(body, "transactions")) if s is not None]


def settled_batches(body: dict[str, Any]) -> list[tuple[str, int | None]]:
    """(batchId, settlementTimeUTC in ms) of each batch listed."""
    out = []
    for batch in _listed(body, "batchList"):
        batch_id = batch.get("batchId") if isinstance(batch, dict) else None
        if isinstance(batch_id, (str, int)) and not isinstance(batch_id, bool) and str(batch_id).isdigit():
            out.append((str(batch_id), parse_utc_datetime(batch.get("settlementTimeUTC"))))
    return out


async def report(*, endpoint: str, timeout_ms: int, request_body: dict[str, Any]) -> dict[str, Any]:
    """One Transaction Reporting call; its parsed answer, or ReportingError."""
    call = next(iter(request_body))
    try:
        response = await fetch(
            endpoint,
            method="POST",
            headers={"content-type": "application/json", "accept": "application/json"},
            body=json.dumps(request_body, separators=(",", ":")),
            signal=js.AbortSignal.timeout(timeout_ms),
        )
        raw = await response.bytes()
    except Exception as exc:  # noqa: BLE001 - every transport failure is "could not read the list"
        raise ReportingError(f"{call}: transport failure ({type(exc).__name__})") from None
    if int(response.status) != 200 or len(raw) > MAX_REPORT_BYTES:
        raise ReportingError(f"{call}: HTTP {int(response.status)}, {len(raw)} bytes")
    try:
        body = parse_response(raw)
    except ValueError:
        raise ReportingError(f"{call}: unreadable answer") from None
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, dict) or messages.get("resultCode") != "Ok":
        listed = messages.get("message") if isinstance(messages, dict) else None
        first = listed[0] if isinstance(listed, list) and listed and isinstance(listed[0], dict) else {}
        code = first.get("code")
        raise ReportingError(f"{call}: not Ok ({code})", code if isinstance(code, str) else None)
    return body
