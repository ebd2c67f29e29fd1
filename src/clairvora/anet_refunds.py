"""Authorize.Net for money going back to the card: `refundTransaction`
(createTransactionRequest) and `getTransactionDetailsRequest` (Transaction
Reporting). The wire facts, with their sources, are in docs/PAYMENTS.md; in
short:

- a refund names the original (`refTransId`), the amount (a decimal string, at
  most what is left of the original: error 55 otherwise) and the card as the
  gateway masks it: `payment.creditCard{cardNumber: <last 4 digits>,
  expirationDate: "XXXX"}`, keys in XSD order like every request;
- only a SETTLED original can be refunded, within 120 days of its settlement;
  anything else is responseCode "3", error 54 "The referenced transaction does
  not meet the criteria for issuing a credit." (an unsettled one can only be
  voided, in full, which this project does not do: wallet_refunds.py);
- we never store card data, so the last 4 digits come from the original's
  details (`transaction.payment.creditCard.cardNumber` "XXXX1111"), read just
  before the refund, which also says whether it has settled
  (`transactionStatus` settledSuccessfully, or capturedPendingSettlement) and
  when (`batch.settlementTimeUTC`);
- each refund carries its own `order.invoiceNumber` "R<part id>" (never a
  deposit's number: a refund webhook matched to the deposit would reverse it a
  second time), so it can be found again in the transaction lists, and
  `duplicateWindow`, so a second delivery of the same refund is refused as a
  duplicate (error 11) naming the first one's transId instead of refunding twice.
"""

from dataclasses import dataclass
from typing import Any

from . import anet
from .config import Settings

# A resend of a refund within this many seconds is recognised as a duplicate
# (wallet_refunds.RESUME_WINDOW_MS and the resolver's grace stay inside it).
REFUND_DUPLICATE_WINDOW_S = 1800
SETTLED = "settledSuccessfully"
UNSETTLED = frozenset({"capturedPendingSettlement"})
# A refund is a transaction of its own; these are its statuses in the lists.
REFUND_STATUSES = frozenset({"refundPendingSettlement", "refundSettledSuccessfully"})
NOT_FOUND = "E00040"  # "The record cannot be found."


@dataclass(frozen=True, slots=True)
class Details:
    trans_id: str
    status: str
    card_last4: str | None
    settle_amount_cents: int | None
    settlement_time_ms: int | None


def _auth(settings: Settings) -> dict[str, str]:
    assert settings.anet_login_id and settings.anet_transaction_key
    return {"name": settings.anet_login_id, "transactionKey": settings.anet_transaction_key}


def details_request(settings: Settings, trans_id: str) -> dict[str, Any]:
    assert trans_id.isascii() and trans_id.isdigit() and len(trans_id) <= 40
    return {"getTransactionDetailsRequest": {"merchantAuthentication": _auth(settings), "transId": trans_id}}


def last4(masked: Any) -> str | None:
    """ "XXXX1111" (the gateway's mask) -> "1111"; anything else -> None."""
    if isinstance(masked, str) and len(masked) >= 4 and masked[-4:].isascii() and masked[-4:].isdigit():
        return masked[-4:]
    return None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_details(body: dict[str, Any]) -> Details | None:
    tx = body.get("transaction")
    if not isinstance(tx, dict):
        return None
    trans_id, status = tx.get("transId"), tx.get("transactionStatus")
    if not isinstance(trans_id, (str, int)) or isinstance(trans_id, bool) or not isinstance(status, str):
        return None
    payment = _object(tx.get("payment"))
    card = _object(payment.get("creditCard"))
    batch = _object(tx.get("batch"))
    return Details(
        trans_id=str(trans_id),
        status=status,
        card_last4=last4(card.get("cardNumber")),
        settle_amount_cents=anet.decimal_to_cents(tx.get("settleAmount")),
        settlement_time_ms=anet.parse_utc_datetime(batch.get("settlementTimeUTC")),
    )


async def transaction_details(settings: Settings, trans_id: str) -> Details:
    """The original's details, or anet.ReportingError (code E00040: no such transaction)."""
    body = await anet.report(
        endpoint=settings.anet_endpoint,
        timeout_ms=settings.anet_timeout_ms,
        request_body=details_request(settings, trans_id),
    )
    details = parse_details(body)
    if details is None:
        raise anet.ReportingError("getTransactionDetailsRequest: no transaction in the answer")
    return details


def refund_request(
    settings: Settings, *, amount_cents: int, card_last4: str, ref_trans_id: str, invoice_number: str, ref_id: str
) -> dict[str, Any]:
    """The request body, keys in XSD order (envelope, then transactionRequest)."""
    assert len(card_last4) == 4 and card_last4.isdigit() and len(invoice_number) <= 20 and len(ref_id) <= 20
    return {
        "createTransactionRequest": {
            "merchantAuthentication": _auth(settings),
            "refId": ref_id,
            "transactionRequest": {
                "transactionType": "refundTransaction",
                "amount": anet.cents_to_decimal(amount_cents),
                "payment": {"creditCard": {"cardNumber": card_last4, "expirationDate": "XXXX"}},
                "refTransId": ref_trans_id,
                "order": {"invoiceNumber": invoice_number, "description": "Clairvora wallet refund"},
                "transactionSettings": {
                    "setting": [{"settingName": "duplicateWindow", "settingValue": str(REFUND_DUPLICATE_WINDOW_S)}]
                },
            },
        }
    }


async def refund(
    settings: Settings, *, amount_cents: int, card_last4: str, ref_trans_id: str, invoice_number: str, ref_id: str
) -> anet.GatewayResult:
    """One refundTransaction; `unknown` when no readable answer came back."""
    return await anet.create_transaction(
        endpoint=settings.anet_endpoint,
        timeout_ms=settings.anet_timeout_ms,
        request_body=refund_request(
            settings,
            amount_cents=amount_cents,
            card_last4=card_last4,
            ref_trans_id=ref_trans_id,
            invoice_number=invoice_number,
            ref_id=ref_id,
        ),
    )
