"""POST /v1/wallet/deposits end to end: Worker -> workers.fetch -> the local
Authorize.Net stand-in (real JSON shapes, BOM included) -> one settle batch."""

import json

import js
import local_runtime
from pyodide.ffi import to_js

from clairvora import anet
from clairvora.db import sql
from money_support import admin_client, balance, user_with_wallet
from support import Client, database, new_user, token_for, unique
from webhook_support import event, post_event


def deposit_body(amount: int = 1250, token: str = "tok_approved") -> dict:
    return {
        "amount_cents": amount,
        "opaque_data": {"data_descriptor": "COMMON.ACCEPT.INAPP.PAYMENT", "data_value": token},
    }


def received(invoice: str) -> list[dict]:
    return json.loads(str(local_runtime.anetControl.received(invoice)))


async def payment_row(payment_id: str) -> dict:
    row = await database().first(sql("SELECT * FROM payments WHERE id = ?", int(payment_id)))
    assert row is not None
    return row


async def test_approved_deposit_credits_the_wallet_once():
    user_id, client = await user_with_wallet("dep")
    token = f"tok_approved.{unique()}"  # single use, like a real Accept.js token
    resp = await client.post("/v1/wallet/deposits", deposit_body(1250, token), headers={"idempotency-key": unique()})
    assert resp.status == 201, resp.text
    body = resp.json()
    assert body["deposit"]["status"] == "approved" and body["deposit"]["amount_cents"] == 1250
    assert body["wallet"] == {"available_cents": 1250, "held_cents": 0, "currency": "USD"}
    assert await balance(user_id) == 1250
    payment = await payment_row(body["deposit"]["id"])
    assert (
        payment["status"] == "approved"
        and payment["gateway_transaction_id"] == body["deposit"]["gateway_transaction_id"]
    )
    assert payment["gateway_response_code"] == "1" and payment["user_id"] == user_id

    # What the gateway received: keys in XSD order, amount as a decimal string, our id as invoiceNumber.
    [sent] = received(body["deposit"]["id"])
    envelope = sent["createTransactionRequest"]
    assert list(envelope) == ["merchantAuthentication", "refId", "transactionRequest"]
    tr = envelope["transactionRequest"]
    assert list(tr) == ["transactionType", "amount", "payment", "order", "customer", "transactionSettings"]
    assert tr["transactionType"] == "authCaptureTransaction" and tr["amount"] == "12.50"
    assert tr["payment"] == {"opaqueData": {"dataDescriptor": "COMMON.ACCEPT.INAPP.PAYMENT", "dataValue": token}}
    assert tr["order"]["invoiceNumber"] == body["deposit"]["id"] and len(tr["order"]["invoiceNumber"]) <= 20
    assert tr["transactionSettings"] == {"setting": [{"settingName": "duplicateWindow", "settingValue": "900"}]}

    # The wallet shows it immediately, with the caller's bookmark.
    page = (
        await client.get("/v1/wallet/transactions", headers={"x-d1-bookmark": resp.headers["x-d1-bookmark"]})
    ).json()
    assert page["items"][0]["kind"] == "deposit" and page["items"][0]["amount_cents"] == 1250
    assert page["items"][0]["reference"] == {"type": "payment", "id": body["deposit"]["id"]}

    # The token is stored nowhere.
    for table in ("payments", "idempotency_keys", "webhook_events"):
        rows = (await database().all(sql(f"SELECT * FROM {table}"))).rows  # noqa: S608 - fixed table names
        assert token not in json.dumps(rows), table


async def test_replay_same_key_and_body_returns_first_reply_without_charging_again():
    user_id, client = await user_with_wallet("dep")
    key, body = unique("key"), deposit_body(900)
    first = await client.post("/v1/wallet/deposits", body, headers={"idempotency-key": key})
    assert first.status == 201
    again = await client.post("/v1/wallet/deposits", body, headers={"idempotency-key": key})
    assert again.status == 201 and again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    # One call: the caller lookup and the claim, which yields to the stored key and reads it.
    assert 'desc="calls=1 ' in again.headers["server-timing"], again.headers["server-timing"]
    assert await balance(user_id) == 900
    assert len(received(first.json()["deposit"]["id"])) == 1
    payments = await database().first(sql("SELECT count(*) AS n FROM payments WHERE user_id = ?", user_id))
    assert payments["n"] == 1

    other = await client.post("/v1/wallet/deposits", deposit_body(901), headers={"idempotency-key": key})
    assert other.status == 422 and other.json()["code"] == "idempotency_key_reused"
    assert await balance(user_id) == 900


async def test_keys_are_scoped_per_user():
    _a, alice = await user_with_wallet("dep")
    b_id, bob = await user_with_wallet("dep")
    key = unique("shared")
    assert (await alice.post("/v1/wallet/deposits", deposit_body(700), headers={"idempotency-key": key})).status == 201
    resp = await bob.post("/v1/wallet/deposits", deposit_body(800), headers={"idempotency-key": key})
    assert resp.status == 201 and resp.json()["wallet"]["available_cents"] == 800
    assert await balance(b_id) == 800


async def test_declined_is_402_and_credits_nothing():
    user_id, client = await user_with_wallet("dep")
    key = unique()
    resp = await client.post(
        "/v1/wallet/deposits", deposit_body(1000, "tok_declined"), headers={"idempotency-key": key}
    )
    assert resp.status == 402 and resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert problem["code"] == "payment_declined" and problem["deposit"]["status"] == "declined"
    assert await balance(user_id) == 0
    assert (await payment_row(problem["deposit"]["id"]))["status"] == "declined"
    replay = await client.post(
        "/v1/wallet/deposits", deposit_body(1000, "tok_declined"), headers={"idempotency-key": key}
    )
    assert replay.status == 402 and replay.json() == problem
    assert len(received(problem["deposit"]["id"])) == 1


async def test_gateway_error_is_502_and_credits_nothing():
    user_id, client = await user_with_wallet("dep")
    resp = await client.post(
        "/v1/wallet/deposits", deposit_body(1000, "tok_error"), headers={"idempotency-key": unique()}
    )
    assert resp.status == 502 and resp.json()["code"] == "payment_gateway_error"
    assert (await payment_row(resp.json()["deposit"]["id"]))["status"] == "error"
    assert await balance(user_id) == 0


async def test_a_token_the_gateway_does_not_know_is_422():
    user_id, client = await user_with_wallet("dep")
    resp = await client.post(
        "/v1/wallet/deposits", deposit_body(1000, "not-a-token"), headers={"idempotency-key": unique()}
    )
    assert resp.status == 422 and resp.json()["code"] == "payment_token_invalid"
    assert resp.json()["deposit"]["status"] == "error"
    assert await balance(user_id) == 0


async def test_a_reused_token_is_422_credits_nothing_and_replays():
    user_id, client = await user_with_wallet("dep")
    token = f"tok_approved.{unique()}"
    first = await client.post("/v1/wallet/deposits", deposit_body(1000, token), headers={"idempotency-key": unique()})
    assert first.status == 201 and await balance(user_id) == 1000

    key, body = unique(), deposit_body(1000, token)  # a new attempt with the token already used
    reused = await client.post("/v1/wallet/deposits", body, headers={"idempotency-key": key})
    assert reused.status == 422 and reused.headers["content-type"] == "application/problem+json"
    problem = reused.json()
    assert problem["code"] == "payment_token_invalid" and "new token from Accept.js" in problem["detail"]
    assert problem["deposit"]["status"] == "error" and problem["wallet"]["available_cents"] == 1000
    assert await balance(user_id) == 1000
    payment = await payment_row(problem["deposit"]["id"])
    assert payment["status"] == "error" and payment["gateway_transaction_id"] is None  # final, nothing to reconcile
    key_row = await database().first(
        sql("SELECT state FROM idempotency_keys WHERE user_id = ? AND idempotency_key = ?", user_id, key)
    )
    assert key_row["state"] == "done"

    replay = await client.post("/v1/wallet/deposits", body, headers={"idempotency-key": key})
    assert replay.status == 422 and replay.json() == problem
    assert replay.headers.get("idempotent-replayed") == "true"
    assert len(received(problem["deposit"]["id"])) == 1  # the replay never reached the gateway
    assert await balance(user_id) == 1000
    await assert_ledger_check_clean()


async def test_a_capture_of_a_deposit_refused_for_its_spent_token_is_credited_once():
    # A second delivery of a deposit whose first delivery charged the card may
    # meet the spent token (E00114) before the duplicate check: the payment is
    # `error`, and the capture notification of its invoice must still credit it.
    user_id, client = await user_with_wallet("dep")
    token = f"tok_approved.{unique()}"
    first = await client.post("/v1/wallet/deposits", deposit_body(1000, token), headers={"idempotency-key": unique()})
    assert first.status == 201
    reused = await client.post("/v1/wallet/deposits", deposit_body(900, token), headers={"idempotency-key": unique()})
    assert reused.status == 422
    payment_id = reused.json()["deposit"]["id"]
    assert (await payment_row(payment_id))["status"] == "error" and await balance(user_id) == 1000

    trans_id = unique("6")  # digits, like the gateway's transaction ids
    capture = event(
        "net.authorize.payment.authcapture.created", trans_id=trans_id, invoice=payment_id, amount_cents=900
    )
    assert (await post_event(capture)).json()["outcome"] == "credited"
    assert (await post_event(capture)).json()["outcome"] == "duplicate"
    # A second notification (another id) for the same capture credits nothing more.
    again = event("net.authorize.payment.authcapture.created", trans_id=trans_id, invoice=payment_id, amount_cents=900)
    assert (await post_event(again)).json()["outcome"] == "already_credited"
    assert await balance(user_id) == 1900
    assert (await payment_row(payment_id))["status"] == "approved"
    await assert_ledger_check_clean()


async def test_an_expired_token_is_422_too():
    user_id, client = await user_with_wallet("dep")
    resp = await client.post(
        "/v1/wallet/deposits", deposit_body(1000, f"tok_expired.{unique()}"), headers={"idempotency-key": unique()}
    )
    assert resp.status == 422 and resp.json()["code"] == "payment_token_invalid"
    assert await balance(user_id) == 0


async def test_a_duplicate_is_409_unknown_and_the_webhook_credits_it_once():
    # tok_duplicate: the gateway got this deposit's request twice and approved
    # the first copy, whose answer was lost; the Worker sees the duplicate.
    user_id, client = await user_with_wallet("dep")
    key, body = unique(), deposit_body(1400, f"tok_duplicate.{unique()}")
    resp = await client.post("/v1/wallet/deposits", body, headers={"idempotency-key": key})
    assert resp.status == 409 and resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    original = problem["deposit"]["gateway_transaction_id"]
    assert problem["code"] == "payment_duplicate" and original and original in problem["detail"]
    assert problem["deposit"]["status"] == "unknown" and problem["wallet"]["available_cents"] == 0
    payment = await payment_row(problem["deposit"]["id"])
    assert payment["status"] == "unknown" and payment["gateway_transaction_id"] == original
    assert await balance(user_id) == 0

    replay = await client.post("/v1/wallet/deposits", body, headers={"idempotency-key": key})
    assert replay.status == 409 and replay.json() == problem and replay.headers.get("idempotent-replayed") == "true"
    assert len(received(problem["deposit"]["id"])) == 1

    # The first copy's capture notification settles it, exactly once.
    capture = event(
        "net.authorize.payment.authcapture.created",
        trans_id=original,
        invoice=problem["deposit"]["id"],
        amount_cents=1400,
    )
    assert (await post_event(capture)).json()["outcome"] == "credited"
    assert (await post_event(capture)).json()["outcome"] == "duplicate"
    assert await balance(user_id) == 1400
    assert (await payment_row(problem["deposit"]["id"]))["status"] == "approved"
    again = await client.post("/v1/wallet/deposits", body, headers={"idempotency-key": key})
    assert again.status == 409 and await balance(user_id) == 1400
    await assert_ledger_check_clean()


async def assert_ledger_check_clean() -> None:
    _admin_id, admin = await admin_client()
    report = (await admin.get("/v1/admin/ledger/check")).json()
    assert report["ok"] is True, [c for c in report["checks"] if not c["ok"]]


async def test_same_amount_deposits_in_a_row_are_not_duplicates():
    # Distinct deposits carry distinct invoiceNumbers (the payment id).
    user_id, client = await user_with_wallet("dep")
    for _ in range(3):
        resp = await client.post(
            "/v1/wallet/deposits", deposit_body(700, "tok_approved"), headers={"idempotency-key": unique()}
        )
        assert resp.status == 201, resp.text
    assert await balance(user_id) == 2100


async def test_held_for_review_is_202_pending_and_not_credited():
    user_id, client = await user_with_wallet("dep")
    resp = await client.post(
        "/v1/wallet/deposits", deposit_body(1000, "tok_held"), headers={"idempotency-key": unique()}
    )
    assert resp.status == 202
    assert resp.json()["deposit"]["status"] == "pending" and resp.json()["wallet"]["available_cents"] == 0
    assert await balance(user_id) == 0


async def test_timeout_is_504_unknown_and_a_retry_never_calls_the_gateway_again():
    user_id, client = await user_with_wallet("dep")
    key = unique()
    resp = await client.post("/v1/wallet/deposits", deposit_body(1000, "tok_timeout"), headers={"idempotency-key": key})
    assert resp.status == 504 and resp.json()["code"] == "payment_gateway_timeout"
    deposit_id = resp.json()["deposit"]["id"]
    assert (await payment_row(deposit_id))["status"] == "unknown"
    assert await balance(user_id) == 0
    retry = await client.post(
        "/v1/wallet/deposits", deposit_body(1000, "tok_timeout"), headers={"idempotency-key": key}
    )
    assert retry.status == 504 and retry.json()["deposit"]["id"] == deposit_id
    assert len(received(deposit_id)) == 1


async def test_refusals_change_nothing():
    user_id, client = await user_with_wallet("dep")
    cases = [
        (deposit_body(499), {"idempotency-key": unique()}, 400),  # below DEPOSIT_MIN_CENTS
        (deposit_body(50001), {"idempotency-key": unique()}, 400),  # above DEPOSIT_MAX_CENTS
        (deposit_body(1000), {}, 400),  # no Idempotency-Key
        ({"amount_cents": 1000}, {"idempotency-key": unique()}, 400),  # no token
        ({**deposit_body(1000), "card_number": "4111111111111111"}, {"idempotency-key": unique()}, 400),
        ({"amount_cents": "10", "opaque_data": deposit_body()["opaque_data"]}, {"idempotency-key": unique()}, 400),
    ]
    for body, headers, status in cases:
        resp = await client.post("/v1/wallet/deposits", body, headers=headers)
        assert resp.status == status, (body, resp.text)
    assert await balance(user_id) == 0
    row = await database().first(sql("SELECT count(*) AS n FROM payments WHERE user_id = ?", user_id))
    assert row["n"] == 0


async def _standin(body_text: str) -> tuple[bytes, dict]:
    init = to_js(
        {
            "method": "POST",
            "headers": to_js({"content-type": "application/json"}, dict_converter=js.Object.fromEntries),
            "body": body_text,
        },
        dict_converter=js.Object.fromEntries,
    )
    response = await js.fetch(str(local_runtime.anetControl.endpoint), init)
    assert int(response.status) == 200  # the real API answers errors with HTTP 200 too
    raw = (await response.arrayBuffer()).to_bytes()
    return raw, anet.parse_response(raw)


async def test_standin_speaks_the_real_quirks():
    secrets = local_runtime.secrets
    good = anet.auth_capture_request(
        login_id=str(secrets.ANET_API_LOGIN_ID),
        transaction_key=str(secrets.ANET_TRANSACTION_KEY),
        amount_cents=500,
        data_descriptor="COMMON.ACCEPT.INAPP.PAYMENT",
        data_value="tok_approved",
        invoice_number="1",
        customer_id="1",
        ref_id="r1",
    )
    raw, body = await _standin(json.dumps(good))
    assert raw.startswith("\ufeff".encode())  # UTF-8 BOM, as the real API sends
    assert body["refId"] == "r1" and body["transactionResponse"]["responseCode"] == "1"
    assert anet.classify(body).outcome == "approved"

    bad_creds = json.loads(json.dumps(good))
    bad_creds["createTransactionRequest"]["merchantAuthentication"]["transactionKey"] = "wrong"
    _raw, body = await _standin(json.dumps(bad_creds))
    assert body["messages"]["resultCode"] == "Error" and body["messages"]["message"][0]["code"] == "E00007"
    assert anet.classify(body).outcome == "error"

    tr = good["createTransactionRequest"]["transactionRequest"]
    swapped = {"amount": tr["amount"], "transactionType": tr["transactionType"], "payment": tr["payment"]}
    out_of_order = {"createTransactionRequest": {**good["createTransactionRequest"], "transactionRequest": swapped}}
    _raw, body = await _standin(json.dumps(out_of_order))
    assert body["messages"]["message"][0]["code"] == "E00003"
    assert "invalid child element 'transactionType'" in body["messages"]["message"][0]["text"]

    declined = json.loads(json.dumps(good).replace("tok_approved", "tok_declined"))
    _raw, body = await _standin(json.dumps(declined))
    assert body["messages"]["resultCode"] == "Ok" and body["transactionResponse"]["responseCode"] == "2"
    assert anet.classify(body).outcome == "declined"


def _request(token: str, invoice: str, *, window: str | None = "900", amount_cents: int = 500) -> dict:
    secrets = local_runtime.secrets
    body = anet.auth_capture_request(
        login_id=str(secrets.ANET_API_LOGIN_ID),
        transaction_key=str(secrets.ANET_TRANSACTION_KEY),
        amount_cents=amount_cents,
        data_descriptor="COMMON.ACCEPT.INAPP.PAYMENT",
        data_value=token,
        invoice_number=invoice,
        customer_id="7",
        ref_id="r1",
    )
    tr = body["createTransactionRequest"]["transactionRequest"]
    if window is None:
        del tr["transactionSettings"]
    else:
        tr["transactionSettings"]["setting"][0]["settingValue"] = window
    return body


async def _send(body: dict) -> dict:
    return (await _standin(json.dumps(body)))[1]


def _advance_standin_clock(seconds: int) -> None:
    local_runtime.anetControl.advanceClock(seconds)


async def test_standin_single_use_tokens():
    once = f"tok_approved.{unique()}"
    first = await _send(_request(once, unique("i")[:20]))
    assert first["transactionResponse"]["responseCode"] == "1"
    raw, again = await _standin(json.dumps(_request(once, unique("i")[:20])))
    assert raw.startswith("\ufeff".encode())
    assert again["messages"] == {"resultCode": "Error", "message": [{"code": "E00114", "text": "Invalid OTS Token."}]}
    assert again["transactionResponse"] == {} and list(again) == ["transactionResponse", "refId", "messages"]
    assert anet.classify(again).outcome == "token_invalid"
    expired = await _send(_request(f"tok_expired.{unique()}", unique("i")[:20]))
    assert expired["messages"]["message"][0]["code"] == "E00115"
    assert anet.classify(expired).outcome == "token_invalid"
    # The suite's reusable test tokens stay reusable.
    for _ in range(2):
        ok = await _send(_request("tok_approved", unique("i")[:20]))
        assert ok["transactionResponse"]["responseCode"] == "1"


async def test_standin_flags_a_resent_transaction_within_the_default_window():
    request = _request("tok_approved", unique("i")[:20], window=None)
    first = await _send(request)
    assert first["transactionResponse"]["responseCode"] == "1"
    dup = await _send(request)
    assert dup["messages"]["resultCode"] == "Error" and dup["messages"]["message"][0]["code"] == "E00027"
    tr = dup["transactionResponse"]
    assert tr["responseCode"] == "3" and tr["transId"] == "0"  # no duplicateWindow sent: no details
    assert tr["errors"] == [{"errorCode": "11", "errorText": "A duplicate transaction has been submitted."}]
    result = anet.classify(dup)
    assert result.outcome == "duplicate" and result.transaction_id is None
    # Any compared field that differs makes it a new transaction: invoice, amount, card, customer.
    other_invoice = _request("tok_approved", unique("i")[:20], window=None)
    assert (await _send(other_invoice))["transactionResponse"]["responseCode"] == "1"
    other_amount = _request("tok_approved", request_invoice(request), window=None, amount_cents=501)
    assert (await _send(other_amount))["transactionResponse"]["responseCode"] == "1"
    other_card = _request("tok_declined", request_invoice(request), window=None)
    assert (await _send(other_card))["transactionResponse"]["responseCode"] == "2"
    other_customer = json.loads(json.dumps(request))
    other_customer["createTransactionRequest"]["transactionRequest"]["customer"]["id"] = "8"
    assert (await _send(other_customer))["transactionResponse"]["responseCode"] == "1"
    # Default window: 120 s.
    _advance_standin_clock(110)
    assert (await _send(request))["transactionResponse"]["errors"][0]["errorCode"] == "11"
    _advance_standin_clock(11)
    assert (await _send(request))["transactionResponse"]["responseCode"] == "1"


def request_invoice(request: dict) -> str:
    return request["createTransactionRequest"]["transactionRequest"]["order"]["invoiceNumber"]


async def test_standin_honours_duplicate_window():
    request = _request("tok_approved", unique("i")[:20], window="300")
    first = (await _send(request))["transactionResponse"]
    _advance_standin_clock(200)  # past the default 120 s, inside 300 s
    dup = (await _send(request))["transactionResponse"]
    # duplicateWindow sent: the answer names the original transaction and its authCode.
    assert dup["responseCode"] == "3" and dup["errors"][0]["errorCode"] == "11"
    assert dup["transId"] == first["transId"] and dup["authCode"] == first["authCode"] != ""
    assert (
        anet.classify({"messages": {"resultCode": "Error"}, "transactionResponse": dup}).transaction_id
        == (first["transId"])
    )
    _advance_standin_clock(101)
    later = (await _send(request))["transactionResponse"]
    assert later["responseCode"] == "1" and later["transId"] != first["transId"]

    # 0 turns the check off: the same request is charged again.
    off = _request("tok_approved", unique("i")[:20], window="0")
    assert (await _send(off))["transactionResponse"]["responseCode"] == "1"
    assert (await _send(off))["transactionResponse"]["responseCode"] == "1"

    # A declined original is named without an authCode.
    declined = _request("tok_declined", unique("i")[:20], window="300")
    original = (await _send(declined))["transactionResponse"]
    dup = (await _send(declined))["transactionResponse"]
    assert dup["errors"][0]["errorCode"] == "11" and dup["transId"] == original["transId"] and dup["authCode"] == ""

    # The settings keep XSD order too, and the window has a range.
    swapped = _request("tok_approved", unique("i")[:20])
    swapped["createTransactionRequest"]["transactionRequest"]["transactionSettings"]["setting"] = [
        {"settingValue": "300", "settingName": "duplicateWindow"}
    ]
    body = await _send(swapped)
    assert body["messages"]["message"][0]["code"] == "E00003"
    assert "invalid child element 'settingName'" in body["messages"]["message"][0]["text"]
    tr = _request("tok_approved", unique("i")[:20])["createTransactionRequest"]["transactionRequest"]
    settings_first = {k: tr[k] for k in ("transactionType", "amount", "payment", "transactionSettings", "order")}
    body = await _send(
        {"createTransactionRequest": {**swapped["createTransactionRequest"], "transactionRequest": settings_first}}
    )
    assert "invalid child element 'order'" in body["messages"]["message"][0]["text"]
    too_long = await _send(_request("tok_approved", unique("i")[:20], window="28801"))
    assert too_long["messages"]["message"][0]["code"] == "E00003"


def test_amount_conversions_are_exact():
    assert anet.cents_to_decimal(1250) == "12.50" and anet.cents_to_decimal(5) == "0.05"
    assert anet.decimal_to_cents(45.0) == 4500 and anet.decimal_to_cents("12.50") == 1250
    assert anet.decimal_to_cents(0.1) == 10 and anet.decimal_to_cents(19.99) == 1999
    assert anet.decimal_to_cents(1.005) is None and anet.decimal_to_cents(True) is None
    assert anet.decimal_to_cents(-1) is None


# --- D1 failing around the settle batch (test-only fault plan: call 1 = caller
# --- lookup + claim, 2 = settle, 3 = the settle's retry) ----------------------


async def test_settle_is_retried_after_a_transient_d1_error():
    user_id, client = await user_with_wallet("dep")
    resp = await client.post(
        "/v1/wallet/deposits", deposit_body(1100), headers={"idempotency-key": unique(), "x-test-d1-fault": "2"}
    )
    assert resp.status == 201, resp.text
    assert resp.json()["wallet"]["available_cents"] == 1100 and await balance(user_id) == 1100


async def test_settle_whose_answer_was_lost_is_not_credited_twice():
    user_id, client = await user_with_wallet("dep")
    key, body = unique(), deposit_body(1200)
    resp = await client.post(
        "/v1/wallet/deposits", body, headers={"idempotency-key": key, "x-test-d1-fault": "2;after"}
    )
    assert resp.status == 201, resp.text
    assert resp.json()["wallet"]["available_cents"] == 1200 and await balance(user_id) == 1200
    again = await client.post("/v1/wallet/deposits", body, headers={"idempotency-key": key})
    assert again.json() == resp.json() and await balance(user_id) == 1200


async def test_a_claim_left_by_a_dead_request_is_recovered_then_resolved_by_the_webhook():
    sub, client = await new_user("dep")
    user_id = int((await client.get("/v1/me")).json()["id"])
    key, body = unique(), deposit_body(1300)
    died = await client.post("/v1/wallet/deposits", body, headers={"idempotency-key": key, "x-test-d1-fault": "2,3"})
    assert died.status == 503
    payment = await database().first(sql("SELECT * FROM payments WHERE user_id = ?", user_id))
    assert payment["status"] == "pending" and await balance(user_id) == 0
    [charged] = received(str(payment["id"]))  # the card was charged at the gateway
    assert charged["createTransactionRequest"]["transactionRequest"]["amount"] == "13.00"

    soon = await client.post("/v1/wallet/deposits", body, headers={"idempotency-key": key})
    assert soon.status == 409 and soon.json()["code"] == "request_in_progress"

    later_ms = payment["created_at_ms"] + 2000 + 60_000 + 1000  # past timeout + margin
    later = Client(await token_for(sub, now_s=later_ms // 1000))
    recovered = await later.post(
        "/v1/wallet/deposits", body, headers={"idempotency-key": key, "x-test-now-ms": str(later_ms)}
    )
    assert recovered.status == 504 and recovered.json()["deposit"]["status"] == "unknown"
    assert recovered.json()["deposit"]["id"] == str(payment["id"])
    assert len(received(str(payment["id"]))) == 1  # recovery never charges again
    capture = event(
        "net.authorize.payment.authcapture.created",
        trans_id="60999000111",
        invoice=str(payment["id"]),
        amount_cents=1300,
    )
    assert (await post_event(capture)).json()["outcome"] == "credited"
    assert await balance(user_id) == 1300
    replay = await later.post(
        "/v1/wallet/deposits", body, headers={"idempotency-key": key, "x-test-now-ms": str(later_ms)}
    )
    assert replay.status == 504 and await balance(user_id) == 1300
