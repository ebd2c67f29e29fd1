"""POST /v1/webhooks/authorizenet: signature, replay, reversals, resolution of
payments the deposit request could not settle."""

import json

from clairvora import ledger
from clairvora.db import TriggerAbort, sql
from clairvora.ids import new_id
from money_support import balance, user_with_wallet
from support import database, unique
from test_deposits import deposit_body
from webhook_support import event, post_event, sign

REFUND = "net.authorize.payment.refund.created"
VOID = "net.authorize.payment.void.created"
CAPTURE = "net.authorize.payment.authcapture.created"


async def _deposit(client, amount: int, token: str = "tok_approved") -> dict:
    resp = await client.post("/v1/wallet/deposits", deposit_body(amount, token), headers={"idempotency-key": unique()})
    assert resp.status in (201, 202, 504), resp.text
    return resp.json()["deposit"]


async def _event_row(body: str) -> dict | None:
    notification_id = json.loads(body)["notificationId"]
    return await database().first(sql("SELECT * FROM webhook_events WHERE notification_id = ?", notification_id))


async def _payment(payment_id: str) -> dict:
    return await database().first(sql("SELECT * FROM payments WHERE id = ?", int(payment_id)))


# --- signature -----------------------------------------------------------------


async def test_valid_signature_unknown_event_is_recorded():
    body = event("net.authorize.customer.created", trans_id="1")
    resp = await post_event(body)
    assert resp.status == 200 and resp.json() == {"received": True, "outcome": "ignored_event"}
    row = await _event_row(body)
    assert row["event_type"] == "net.authorize.customer.created" and row["outcome"] == "ignored_event"


async def test_lowercase_hex_and_any_header_case_are_accepted():
    body = event("net.authorize.customer.created", trans_id="2")
    signature = sign(body)
    assert signature.startswith("sha512=") and signature[7:] == signature[7:].upper()
    resp = await post_event(body, signature=None, headers={"X-ANET-Signature": "sha512=" + signature[7:].lower()})
    assert resp.status == 200


async def test_wrong_key_tampered_body_missing_or_malformed_header_are_401_and_change_nothing():
    body = event(CAPTURE, trans_id="3", invoice="12345678901234", amount_cents=500)
    other_key = "A" * 128
    tampered = body.replace('"authAmount":5.0', '"authAmount":50.0')
    assert tampered != body
    cases = [
        (body, sign(body, other_key)),
        (tampered, sign(body)),
        (body, None),
        (body, sign(body)[7:]),  # no sha512= prefix
        (body, "sha256=" + sign(body)[7:]),
        (body, "sha512=" + "0" * 128),
        (body, "sha512=zz"),
    ]
    for payload, signature in cases:
        resp = await post_event(payload, signature=signature)
        assert resp.status == 401, signature
        assert resp.json()["code"] == "invalid_signature"
        assert await _event_row(payload) is None


async def test_body_size_is_limited():
    body = event("net.authorize.customer.created", trans_id="4")[:-1] + ',"pad":"' + "x" * 20000 + '"}'
    resp = await post_event(body)
    assert resp.status == 413


async def test_signed_but_malformed_event_is_400():
    body = json.dumps({"eventType": "x"})
    assert (await post_event(body)).status == 400


# --- reversals -------------------------------------------------------------------


async def test_refund_event_reverses_the_deposit_once():
    user_id, client = await user_with_wallet("wh")
    deposit = await _deposit(client, 2000)
    body = event(REFUND, trans_id=str(new_id()), invoice=deposit["id"], amount_cents=500)
    resp = await post_event(body)
    assert resp.json()["outcome"] == "reversed"
    assert await balance(user_id) == 1500
    payment = await _payment(deposit["id"])
    assert payment["reversed_cents"] == 500 and payment["status"] == "approved"
    # The same notification again: a no-op.
    again = await post_event(body)
    assert again.status == 200 and again.json()["outcome"] == "duplicate"
    assert await balance(user_id) == 1500
    items = (await client.get("/v1/wallet/transactions")).json()["items"]
    assert [i["kind"] for i in items] == ["deposit_reversal", "deposit"]
    assert items[0]["amount_cents"] == -500 and items[0]["balance_after_cents"] == 1500

    # The rest, then nothing more can be refunded.
    assert (await post_event(event(REFUND, trans_id=str(new_id()), invoice=deposit["id"], amount_cents=1500))).json()[
        "outcome"
    ] == "reversed"
    assert (await _payment(deposit["id"]))["status"] == "refunded"
    over = await post_event(event(REFUND, trans_id=str(new_id()), invoice=deposit["id"], amount_cents=1))
    assert over.json()["outcome"] == "not_reversible"
    assert await balance(user_id) == 0


async def test_refund_larger_than_the_payment_is_refused():
    user_id, client = await user_with_wallet("wh")
    deposit = await _deposit(client, 1000)
    resp = await post_event(event(REFUND, trans_id=str(new_id()), invoice=deposit["id"], amount_cents=1001))
    assert resp.json()["outcome"] == "amount_invalid"
    assert await balance(user_id) == 1000


async def test_void_of_a_spent_deposit_takes_the_wallet_negative_and_blocks_spending():
    user_id, client = await user_with_wallet("wh")
    deposit = await _deposit(client, 1000)
    db = database()
    spend = [ledger.Leg(ledger.wallet_of(user_id), -700), ledger.Leg(ledger.PLATFORM_REVENUE, 700)]
    await db.batch(ledger.transfer(transfer_id=new_id(), key=f"t:{new_id()}", kind="adjustment", legs=spend, now_ms=1))
    # Void matched on the original transaction id (no invoiceNumber in the payload).
    resp = await post_event(event(VOID, trans_id=deposit["gateway_transaction_id"]))
    assert resp.json()["outcome"] == "reversed"
    assert await balance(user_id) == -700
    assert (await client.get("/v1/wallet")).json()["available_cents"] == -700
    payment = await _payment(deposit["id"])
    assert payment["status"] == "voided" and payment["reversed_cents"] == 1000
    # No debit can go through while negative.
    debit = [ledger.Leg(ledger.wallet_of(user_id), -1), ledger.Leg(ledger.PLATFORM_REVENUE, 1)]
    try:
        await db.batch(
            ledger.transfer(transfer_id=new_id(), key=f"t:{new_id()}", kind="reading_charge", legs=debit, now_ms=2)
        )
        raise AssertionError("a negative wallet was debited")
    except TriggerAbort as exc:
        assert exc.code == "insufficient_funds"
    # A new deposit pays the debt first.
    await _deposit(client, 1000)
    assert await balance(user_id) == 300


async def test_reversal_only_of_approved_payments_is_enforced_in_sql():
    user_id, client = await user_with_wallet("wh")
    resp = await client.post(
        "/v1/wallet/deposits", deposit_body(1000, "tok_declined"), headers={"idempotency-key": unique()}
    )
    deposit = resp.json()["deposit"]
    legs = [ledger.Leg(ledger.wallet_of(user_id), -100), ledger.Leg(ledger.GATEWAY_CLEARING, 100)]
    try:
        await database().batch(
            ledger.transfer(
                transfer_id=new_id(),
                key=f"t:{new_id()}",
                kind="deposit_reversal",
                legs=legs,
                now_ms=1,
                reference_type="payment",
                reference_id=int(deposit["id"]),
            )
        )
        raise AssertionError("reversed a declined payment")
    except TriggerAbort as exc:
        assert exc.code == "payment_not_approved"
    assert (await post_event(event(VOID, trans_id=str(new_id()), invoice=deposit["id"]))).json()[
        "outcome"
    ] == "not_reversible"
    assert await balance(user_id) == 0


# --- resolving what the deposit request could not settle -------------------------


async def test_unknown_payment_is_credited_by_the_authcapture_webhook_exactly_once():
    user_id, client = await user_with_wallet("wh")
    deposit = await _deposit(client, 1500, "tok_timeout")
    assert deposit["status"] == "unknown" and await balance(user_id) == 0
    trans_id = str(new_id())
    wrong_amount = await post_event(event(CAPTURE, trans_id=trans_id, invoice=deposit["id"], amount_cents=1499))
    assert wrong_amount.json()["outcome"] == "amount_mismatch" and await balance(user_id) == 0
    body = event(CAPTURE, trans_id=trans_id, invoice=deposit["id"], amount_cents=1500)
    assert (await post_event(body)).json()["outcome"] == "credited"
    assert await balance(user_id) == 1500
    payment = await _payment(deposit["id"])
    assert payment["status"] == "approved" and payment["gateway_transaction_id"] == trans_id
    assert (await post_event(body)).json()["outcome"] == "duplicate"
    # Another notification for the same capture (Authorize.Net may send several).
    other = event(CAPTURE, trans_id=trans_id, invoice=deposit["id"], amount_cents=1500)
    assert (await post_event(other)).json()["outcome"] == "already_credited"
    assert await balance(user_id) == 1500


async def test_capture_event_for_a_payment_the_request_already_credited_is_a_no_op():
    user_id, client = await user_with_wallet("wh")
    deposit = await _deposit(client, 800)
    resp = await post_event(
        event(CAPTURE, trans_id=deposit["gateway_transaction_id"], invoice=deposit["id"], amount_cents=800)
    )
    assert resp.json()["outcome"] == "already_credited"
    assert await balance(user_id) == 800


async def test_held_payment_credited_on_fraud_approved_or_declined_on_fraud_declined():
    user_id, client = await user_with_wallet("wh")
    held = await _deposit(client, 1000, "tok_held")
    assert held["status"] == "pending"
    approve = event(
        "net.authorize.payment.fraud.approved",
        trans_id=held["gateway_transaction_id"],
        invoice=held["id"],
        amount_cents=1000,
    )
    assert (await post_event(approve)).json()["outcome"] == "credited"
    assert await balance(user_id) == 1000
    other = await _deposit(client, 700, "tok_held")
    decline = event(
        "net.authorize.payment.fraud.declined",
        trans_id=other["gateway_transaction_id"],
        invoice=other["id"],
        amount_cents=700,
    )
    assert (await post_event(decline)).json()["outcome"] == "declined"
    assert (await _payment(other["id"]))["status"] == "declined"
    late = event(CAPTURE, trans_id=other["gateway_transaction_id"], invoice=other["id"], amount_cents=700)
    assert (await post_event(late)).json()["outcome"] == "unexpected_capture"
    assert await balance(user_id) == 1000


async def test_void_before_credit_stops_a_later_capture():
    user_id, client = await user_with_wallet("wh")
    deposit = await _deposit(client, 1000, "tok_timeout")
    assert (await post_event(event(VOID, trans_id=str(new_id()), invoice=deposit["id"]))).json()[
        "outcome"
    ] == "voided_uncredited"
    late = event(CAPTURE, trans_id=str(new_id()), invoice=deposit["id"], amount_cents=1000)
    assert (await post_event(late)).json()["outcome"] == "unexpected_capture"
    assert await balance(user_id) == 0


async def test_unknown_transaction_is_recorded_and_acknowledged():
    body = event(REFUND, trans_id="999999999", invoice="77", amount_cents=100)
    resp = await post_event(body)
    assert resp.status == 200 and resp.json()["outcome"] == "unknown_transaction"
    assert (await _event_row(body))["outcome"] == "unknown_transaction"
