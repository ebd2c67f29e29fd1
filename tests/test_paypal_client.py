"""The PayPal client against the stand-in and on PayPal's published answer
shapes: the token is fetched once and reused until it is refused, the create
body's wire form, the duplicate refusal that names the original batch."""

import json

import local_runtime

from clairvora import paypal
from payout_support import settings

control = local_runtime.paypalControl

# PayPal's answer to a reused sender_batch_id, as recorded from the sandbox
# (plutov/paypal unit_test.go, TestTypeErrorResponseOne).
DUPLICATE = {
    "name": "USER_BUSINESS_ERROR",
    "message": "User business error.",
    "debug_id": "f05063556a338",
    "information_link": "https://developer.paypal.com/docs/api/payments.payouts-batch/#errors",
    "details": [
        {
            "field": "SENDER_BATCH_ID",
            "issue": "Batch with given sender_batch_id already exists",
            "link": [
                {
                    "href": "https://api.sandbox.paypal.com/v1/payments/payouts/CR9VS2K4X4846",
                    "rel": "self",
                    "method": "GET",
                }
            ],
        }
    ],
}

# A PAYMENT.PAYOUTS-ITEM.SUCCEEDED resource as PayPal's documentation shows it.
ITEM = {
    "transaction_id": "57J64166G9424913F",
    "payout_item_fee": {"currency": "USD", "value": "0.25"},
    "transaction_status": "SUCCESS",
    "time_processed": "2016-06-06T03:44:51Z",
    "payout_item": {
        "recipient_type": "EMAIL",
        "amount": {"currency": "USD", "value": "1.0"},
        "note": "First payout",
        "receiver": "beamdaddy@paypal.com",
        "sender_item_id": "Item1",
    },
    "payout_item_id": "AYNYWNCHBD8KS",
    "payout_batch_id": "Q8B9WFS7ZZJ4Q",
}


def test_the_duplicate_refusal_names_the_original_batch():
    assert paypal.duplicate_batch_id(DUPLICATE) == "CR9VS2K4X4846"
    unnamed = {**DUPLICATE, "details": [{"field": "SENDER_BATCH_ID", "issue": "Duplicate batch request"}]}
    assert paypal.duplicate_batch_id(unnamed) == ""  # a duplicate, original unknown: never guessed
    assert paypal.duplicate_batch_id({"name": "VALIDATION_ERROR", "details": [{"field": "items[0].receiver"}]}) is None
    assert paypal.duplicate_batch_id({"name": "USER_BUSINESS_ERROR", "details": [{"field": "RECEIVER"}]}) is None


def test_an_item_reads_as_documented():
    item = paypal.parse_item(ITEM)
    assert item == paypal.Item("AYNYWNCHBD8KS", "SUCCESS", "Item1", 100, None)
    failed = paypal.parse_item({**ITEM, "transaction_status": "FAILED", "errors": {"name": "RECEIVER_UNREGISTERED"}})
    assert failed is not None and failed.error_name == "RECEIVER_UNREGISTERED"
    assert (
        paypal.parse_item(
            {**ITEM, "payout_item": {**ITEM["payout_item"], "amount": {"value": "1.0", "currency": "EUR"}}}
        ).amount_cents
        is None
    )


def test_the_create_body_is_one_item_named_by_our_id_with_a_decimal_string():
    body = paypal.payout_request(1234567890123, 105, "PAYPAL_ID", "C9G8B5ZBB6WLS")
    assert body["sender_batch_header"]["sender_batch_id"] == "1234567890123"
    (item,) = body["items"]
    assert item == {
        "recipient_type": "PAYPAL_ID",
        "amount": {"value": "1.05", "currency": "USD"},
        "note": paypal.ITEM_NOTE,
        "sender_item_id": "1234567890123",
        "receiver": "C9G8B5ZBB6WLS",
    }


async def test_the_token_is_reused_until_refused_then_fetched_once_more():
    s = settings()
    paypal.forget_tokens()
    start = int(control.counts()["tokens"])
    first = await paypal.access_token(s)
    assert await paypal.access_token(s) == first
    assert await paypal.get_batch(s, "NOSUCHBATCH1") is None  # an authorized call on the cached token
    assert int(control.counts()["tokens"]) == start + 1
    control.revokeTokens()  # PayPal refuses the cached token: a new one, then the call goes through
    assert await paypal.get_batch(s, "NOSUCHBATCH2") is None
    assert int(control.counts()["tokens"]) == start + 2 and await paypal.access_token(s) != first
    # Bad credentials: no token, and the client says PayPal is unavailable.
    paypal.forget_tokens()
    try:
        await paypal.access_token(settings(PAYPAL_CLIENT_SECRET="wrong"))
    except paypal.PayPalUnavailable:
        pass
    else:
        raise AssertionError("a refused token request gave a token")
    token_requests = [r for r in control.received("/v1/oauth2/token")]
    assert token_requests and token_requests[-1]["body"] == "grant_type=client_credentials"


async def test_the_verification_covers_the_body_as_received():
    s = settings()
    delivery = control.signEvent(
        {"id": "WH-VERIFY-1", "event_type": "PAYMENT.PAYOUTS-ITEM.SUCCEEDED", "resource": ITEM}
    )
    headers = paypal.webhook_headers(lambda name: dict(delivery["headers"]).get(name))
    assert headers is not None
    assert await paypal.verify_webhook(s, headers, str(delivery["body"])) is True
    altered = json.dumps({**json.loads(delivery["body"]), "summary": "changed"}, separators=(",", ":"))
    assert await paypal.verify_webhook(s, headers, altered) is False
    assert (
        await paypal.verify_webhook(settings(PAYPAL_WEBHOOK_ID="1JE4291016473214C"), headers, str(delivery["body"]))
        is False
    )
    sent = json.loads(control.received("/v1/notifications/verify-webhook-signature")[-3]["body"])
    assert sent["webhook_event"] == json.loads(delivery["body"]) and sent["auth_algo"] == "SHA256withRSA"
