"""Deposits whose gateway answer never reached us, resolved by looking them up at
the gateway by invoiceNumber (deposit_resolution.py, issue 13 item 6).

The deposit request dies where a real Worker can die, with the test-only D1
fault switch (call 1 = caller lookup + claim, 2 = settle, 3 = the settle's retry):
`1;after` commits the claim and fails right after it, so the gateway call is
never sent; `2,3` fails the settle twice after the gateway answered. The cron's
job is called directly with a `now` past the grace period (the stand-in keeps
the real Authorize.Net lists: unsettled transactions, settled batches)."""

import dataclasses
import json

import js
import local_runtime
from pyodide.ffi import to_js

from clairvora import anet, deposit_resolution, reconcile
from clairvora.clock import Clock
from clairvora.config import Settings
from clairvora.db import sql
from clairvora.deposit_resolution import RESOLVE_AFTER_MS, decide
from clairvora.ids import new_id
from money_support import balance
from support import Client, database, new_user, token_for, unique
from test_deposits import deposit_body, received
from webhook_support import event, post_event

AFTER_GRACE_MS = RESOLVE_AFTER_MS + 60_000
MAX_DRAIN_RUNS = 30


def _settings(**changes: str) -> Settings:
    return dataclasses.replace(Settings.from_env(local_runtime.makeEnv()), **changes)


async def _resolve(now_ms: int, settings: Settings | None = None) -> dict[str, int]:
    return await deposit_resolution.resolve_stale_deposits(database(), settings or _settings(), now_ms)


async def _drain(now_ms: int) -> None:
    """Resolve (or put back) what earlier tests left waiting, so this test's
    payment is the only change the next runs and checks see."""
    for _ in range(MAX_DRAIN_RUNS):
        if (await _resolve(now_ms)).get("deposits_looked_up", 0) == 0:
            return
    raise AssertionError("waiting deposits never drained")


async def _payment(payment_id: int) -> dict:
    row = await database().first(sql("SELECT * FROM payments WHERE id = ?", payment_id))
    assert row is not None
    return row


async def _waiting(now_ms: int) -> dict:
    return (await reconcile.check(database(), now_ms))["unresolved_payments"]


async def _user() -> tuple[str, int, Client]:
    sub, client = await new_user("res")
    user_id = int((await client.get("/v1/me")).json()["id"])
    return sub, user_id, client


async def _died(client: Client, user_id: int, body: dict, key: str, fault: str) -> dict:
    resp = await client.post("/v1/wallet/deposits", body, headers={"idempotency-key": key, "x-test-d1-fault": fault})
    assert resp.status == 503, resp.text
    # Ids are random: the payment is found by its user and amount (distinct in each test).
    row = await database().first(
        sql("SELECT * FROM payments WHERE user_id = ? AND amount_cents = ?", user_id, body["amount_cents"])
    )
    assert row is not None and row["status"] == "pending" and row["gateway_transaction_id"] is None
    return row


async def _retry(sub: str, body: dict, key: str, now_ms: int):
    later = Client(await token_for(sub, now_s=now_ms // 1000))
    return await later.post("/v1/wallet/deposits", body, headers={"idempotency-key": key, "x-test-now-ms": str(now_ms)})


async def test_a_claim_whose_gateway_call_was_never_sent_is_resolved_as_not_processed():
    now = Clock().now_ms() + AFTER_GRACE_MS
    await _drain(now)
    before = await _waiting(now)
    sub, user_id, client = await _user()
    key, body = unique(), deposit_body(1400, f"tok_approved.{unique()}")
    payment = await _died(client, user_id, body, key, "1;after")
    assert received(str(payment["id"])) == []  # the gateway never heard of it

    # The ledger check shows it while it waits: claimed, never settled; overdue once past the grace period.
    young = await _waiting(payment["created_at_ms"] + 1000)
    assert young["by_state"]["claimed_not_settled"] == before["by_state"]["claimed_not_settled"] + 1
    waiting = await _waiting(now)
    assert waiting["by_state"]["claimed_not_settled"] == before["by_state"]["claimed_not_settled"] + 1
    assert waiting["lookup_overdue"]["count"] == before["lookup_overdue"]["count"] + 1
    # Before the grace period nothing is looked up (the token might still charge).
    assert (await _resolve(payment["created_at_ms"] + RESOLVE_AFTER_MS - 1000)).get("deposits_looked_up") == 0
    assert (await _payment(payment["id"]))["status"] == "pending"

    counts = await _resolve(now)
    assert counts["deposits_resolved"] >= 1, counts
    resolved = await _payment(payment["id"])
    assert resolved["status"] == "error" and resolved["gateway_transaction_id"] is None
    assert await balance(user_id) == 0
    after = await _waiting(now)
    assert after["by_state"] == before["by_state"] and after["lookup_overdue"] == before["lookup_overdue"]

    # The dead request's key now answers for good: nothing was charged.
    replay = await _retry(sub, body, key, now)
    assert replay.status == 502 and replay.json()["code"] == "payment_not_processed", replay.text
    assert replay.json()["deposit"]["status"] == "error" and replay.headers.get("idempotent-replayed") == "true"
    assert received(str(payment["id"])) == []  # and it never calls the gateway
    # A second run finds nothing more to do with it.
    assert (await _resolve(now + 60_000)).get("deposits_resolved", 0) == 0
    assert (await _payment(payment["id"]))["status"] == "error"


async def test_a_claim_charged_but_never_settled_is_found_approved_and_credited_once():
    now = Clock().now_ms() + AFTER_GRACE_MS
    await _drain(now)
    sub, user_id, client = await _user()
    key, body = unique(), deposit_body(1500, f"tok_approved.{unique()}")
    payment = await _died(client, user_id, body, key, "2,3")
    assert len(received(str(payment["id"]))) == 1 and await balance(user_id) == 0

    await _resolve(now)
    resolved = await _payment(payment["id"])
    assert resolved["status"] == "approved" and resolved["gateway_transaction_id"] is not None
    assert await balance(user_id) == 1500
    report = await reconcile.check(database(), now)
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]

    replay = await _retry(sub, body, key, now)
    assert replay.status == 201, replay.text
    assert replay.json()["deposit"]["gateway_transaction_id"] == resolved["gateway_transaction_id"]
    assert replay.json()["wallet"]["available_cents"] == 1500
    # The gateway's capture webhook, arriving late, does not credit it again.
    capture = event(
        "net.authorize.payment.authcapture.created",
        trans_id=resolved["gateway_transaction_id"],
        invoice=str(payment["id"]),
        amount_cents=1500,
    )
    assert (await post_event(capture)).json()["outcome"] == "already_credited"
    assert await balance(user_id) == 1500


async def test_declined_and_held_are_settled_as_the_gateway_says():
    now = Clock().now_ms() + AFTER_GRACE_MS
    await _drain(now)
    sub, user_id, client = await _user()
    declined_key, declined_body = unique(), deposit_body(1600, "tok_declined")
    declined = await _died(client, user_id, declined_body, declined_key, "2,3")
    held_key, held_body = unique(), deposit_body(1700, "tok_held")
    held = await _died(client, user_id, held_body, held_key, "2,3")
    before = await _waiting(now)

    await _resolve(now)
    assert (await _payment(declined["id"]))["status"] == "declined"
    held_row = await _payment(held["id"])
    assert held_row["status"] == "pending" and held_row["gateway_transaction_id"] is not None
    assert await balance(user_id) == 0
    after = await _waiting(now)
    # The held one now waits for the fraud webhook, like any payment held for review.
    assert after["by_state"]["claimed_not_settled"] == before["by_state"]["claimed_not_settled"] - 2
    assert after["by_state"]["held_for_review"] == before["by_state"]["held_for_review"] + 1
    assert (await _retry(sub, declined_body, declined_key, now)).json()["code"] == "payment_declined"
    assert (await _retry(sub, held_body, held_key, now)).status == 202
    await _resolve(now + AFTER_GRACE_MS)  # held: not the lookup's to decide any more
    assert (await _payment(held["id"]))["status"] == "pending"


async def test_an_unknown_timeout_the_gateway_never_processed_becomes_error_and_a_late_capture_still_credits():
    now = Clock().now_ms() + AFTER_GRACE_MS
    await _drain(now)
    _sub, user_id, client = await _user()
    key = unique()
    resp = await client.post("/v1/wallet/deposits", deposit_body(1800, "tok_timeout"), headers={"idempotency-key": key})
    assert resp.status == 504
    payment_id = int(resp.json()["deposit"]["id"])
    assert (await _payment(payment_id))["status"] == "unknown"

    await _resolve(now)
    assert (await _payment(payment_id))["status"] == "error"
    # Its key was answered (504) and stays so: replies are never rewritten.
    again = await client.post(
        "/v1/wallet/deposits", deposit_body(1800, "tok_timeout"), headers={"idempotency-key": key}
    )
    assert again.status == 504
    # Should the gateway ever say it charged it after all, its signed word still credits it.
    capture = event(
        "net.authorize.payment.authcapture.created", trans_id=str(new_id()), invoice=str(payment_id), amount_cents=1800
    )
    assert (await post_event(capture)).json()["outcome"] == "credited"
    assert await balance(user_id) == 1800


async def test_an_unknown_duplicate_is_credited_from_the_original_transaction():
    now = Clock().now_ms() + AFTER_GRACE_MS
    await _drain(now)
    _sub, user_id, client = await _user()
    resp = await client.post(
        "/v1/wallet/deposits", deposit_body(1900, f"tok_duplicate.{unique()}"), headers={"idempotency-key": unique()}
    )
    assert resp.status == 409 and resp.json()["code"] == "payment_duplicate"
    payment_id = int(resp.json()["deposit"]["id"])
    original = (await _payment(payment_id))["gateway_transaction_id"]
    assert original is not None and await balance(user_id) == 0

    await _resolve(now)
    row = await _payment(payment_id)
    assert row["status"] == "approved" and row["gateway_transaction_id"] == original
    assert await balance(user_id) == 1900


async def test_a_transaction_already_in_a_settled_batch_is_found_there():
    # The stand-in settles at its daily cut-off: a day later the transaction is in a
    # settled batch, no longer in the unsettled list.
    day_ms = 86_400_000
    _sub, user_id, client = await _user()
    payment = await _died(client, user_id, deposit_body(2000, f"tok_approved.{unique()}"), unique(), "2,3")
    local_runtime.anetControl.advanceClock(day_ms // 1000)
    now = Clock().now_ms() + day_ms + AFTER_GRACE_MS
    listed = await _report(anet.unsettled_list_request(**_auth(), page=1))
    assert str(payment["id"]) not in {t.invoice_number for t in anet.summaries(listed)}

    await _drain(now)
    row = await _payment(payment["id"])
    assert row["status"] == "approved" and await balance(user_id) == 2000


async def test_what_cannot_be_decided_waits_and_stays_in_the_ledger_check():
    # The gateway has an approved transaction for the invoice, of another amount.
    now = Clock().now_ms() + AFTER_GRACE_MS
    await _drain(now)
    _sub, user_id, _client = await _user()
    payment_id = new_id()
    await database().run(
        sql(
            """INSERT INTO payments (id, user_id, amount_cents, status, created_at_ms, updated_at_ms)
               VALUES (?, ?, 2100, 'pending', ?, ?)""",
            payment_id,
            user_id,
            now - AFTER_GRACE_MS,
            now - AFTER_GRACE_MS,
        )
    )
    charge = _charge("tok_approved", str(payment_id), amount_cents=2200)
    assert (await _report(charge))["transactionResponse"]["responseCode"] == "1"
    before = await _waiting(now)

    counts = await _resolve(now)
    assert counts["deposits_undecided"] >= 1, counts
    row = await _payment(payment_id)
    assert row["status"] == "pending" and row["updated_at_ms"] == now  # to the back of the queue
    assert await balance(user_id) == 0
    after = await _waiting(now)
    assert after["lookup_overdue"]["count"] == before["lookup_overdue"]["count"]  # still overdue: by hand
    assert after["by_state"]["claimed_not_settled"] == before["by_state"]["claimed_not_settled"]
    # Not looked up again before another grace period.
    assert (await _resolve(now + 60_000)).get("deposits_looked_up", 0) == 0
    # The operator settles it by hand (here: the gateway's amount was wrong; nothing to credit).
    await database().run(sql("UPDATE payments SET status = 'error' WHERE id = ?", payment_id))


async def test_a_gateway_that_cannot_be_read_changes_nothing():
    now = Clock().now_ms() + AFTER_GRACE_MS
    await _drain(now)
    _sub, user_id, client = await _user()
    payment = await _died(client, user_id, deposit_body(2300, f"tok_approved.{unique()}"), unique(), "1;after")
    counts = await _resolve(now, _settings(anet_transaction_key="wrong-key"))  # E00007
    assert counts.get("deposit_lookup_failed") == 1 and counts["deposits_resolved"] == 0
    row = await _payment(payment["id"])
    assert row["status"] == "pending" and row["updated_at_ms"] == payment["updated_at_ms"]
    await _resolve(now)
    assert (await _payment(payment["id"]))["status"] == "error"


def _summary(status: str, amount_cents: int = 500, trans_id: str = "1") -> anet.TransactionSummary:
    return anet.TransactionSummary(trans_id, status, "7", amount_cents, 0)


def test_decisions():
    payment = {"id": 7, "amount_cents": 500, "status": "pending", "gateway_transaction_id": None}
    assert decide(payment, [], complete=True).outcome == "not_processed"
    assert decide(payment, [], complete=False).outcome == "undecided"
    assert decide(payment, [_summary("settledSuccessfully")], complete=False).status == "approved"
    assert decide(payment, [_summary("capturedPendingSettlement", 501)], True).outcome == "undecided"
    two = [_summary("capturedPendingSettlement"), _summary("settledSuccessfully", trans_id="2")]
    assert decide(payment, two, True).outcome == "undecided"
    assert decide(payment, [_summary("refundSettledSuccessfully")], True).outcome == "not_processed"
    declined_then_approved = [_summary("declined"), _summary("capturedPendingSettlement", trans_id="2")]
    assert decide(payment, declined_then_approved, True).transaction.trans_id == "2"
    assert decide(payment, [_summary("FDSPendingReview")], True).status == "pending"
    assert decide(payment, [_summary("voided")], True).status == "voided"
    assert decide(payment, [_summary("generalError")], True).status == "error"
    assert decide(payment, [_summary("settlementError")], True).outcome == "undecided"


# --- the stand-in's Transaction Reporting speaks Authorize.Net's wire format ---


def _auth() -> dict[str, str]:
    secrets = local_runtime.secrets
    return {"login_id": str(secrets.ANET_API_LOGIN_ID), "transaction_key": str(secrets.ANET_TRANSACTION_KEY)}


def _charge(token: str, invoice: str, amount_cents: int = 500) -> dict:
    return anet.auth_capture_request(
        **_auth(),
        amount_cents=amount_cents,
        data_descriptor="COMMON.ACCEPT.INAPP.PAYMENT",
        data_value=token,
        invoice_number=invoice,
        customer_id="9",
        ref_id="r1",
    )


async def _raw(body: dict) -> bytes:
    init = to_js(
        {
            "method": "POST",
            "headers": to_js({"content-type": "application/json"}, dict_converter=js.Object.fromEntries),
            "body": json.dumps(body),
        },
        dict_converter=js.Object.fromEntries,
    )
    response = await js.fetch(str(local_runtime.anetControl.endpoint), init)
    assert int(response.status) == 200
    return (await response.arrayBuffer()).to_bytes()


async def _report(body: dict) -> dict:
    return anet.parse_response(await _raw(body))


async def test_standin_reporting_lists_our_invoice_with_the_real_shapes():
    invoice = unique("i")[:20]
    approved = (await _report(_charge("tok_approved", invoice, 1234)))["transactionResponse"]
    raw = await _raw(anet.unsettled_list_request(**_auth(), page=1))
    assert raw.startswith("\ufeff".encode())
    body = anet.parse_response(raw)
    assert list(body) == ["transactions", "totalNumInResultSet", "messages"]
    assert body["messages"]["resultCode"] == "Ok"
    [mine] = [t for t in body["transactions"] if t.get("invoiceNumber") == invoice]
    assert list(mine)[:5] == ["transId", "submitTimeUTC", "submitTimeLocal", "transactionStatus", "invoiceNumber"]
    assert mine["transId"] == approved["transId"] and mine["transactionStatus"] == "capturedPendingSettlement"
    assert mine["settleAmount"] == 12.34 and mine["submitTimeUTC"].endswith("Z")
    [summary] = [s for s in anet.summaries(body) if s.invoice_number == invoice]
    assert summary.amount_cents == 1234 and summary.submit_time_ms is not None
    # Newest first by submitTimeUTC, 1000 a page; offset is the page number.
    times = [anet.parse_utc_datetime(t["submitTimeUTC"]) for t in body["transactions"]]
    assert times == sorted(times, reverse=True)
    second = await _report(anet.unsettled_list_request(**_auth(), page=2))
    assert "transactions" not in second and second["messages"]["message"][0]["code"] == "I00004"


async def test_standin_reporting_refuses_what_the_real_api_refuses():
    out_of_order = anet.unsettled_list_request(**_auth(), page=1)
    request = out_of_order["getUnsettledTransactionListRequest"]
    swapped = {"paging": request["paging"], "merchantAuthentication": request["merchantAuthentication"]}
    body = await _report({"getUnsettledTransactionListRequest": swapped})
    assert body["messages"]["message"][0]["code"] == "E00003"
    assert "invalid child element 'merchantAuthentication'" in body["messages"]["message"][0]["text"]
    bad_paging = anet.unsettled_list_request(**_auth(), page=1)
    bad_paging["getUnsettledTransactionListRequest"]["paging"]["limit"] = "1001"
    assert (await _report(bad_paging))["messages"]["message"][0]["code"] == "E00003"
    wrong = anet.unsettled_list_request(login_id=_auth()["login_id"], transaction_key="wrong", page=1)
    assert (await _report(wrong))["messages"]["message"][0]["code"] == "E00007"
    now = Clock().now_ms()
    too_wide = anet.settled_batch_list_request(**_auth(), first_ms=now - 31 * 86_400_000, last_ms=now)
    too_wide["getSettledBatchListRequest"]["firstSettlementDate"] = anet.utc_datetime(now - 32 * 86_400_000)
    assert (await _report(too_wide))["messages"]["resultCode"] == "Error"
    unknown_batch = await _report(anet.transaction_list_request(**_auth(), batch_id="1", page=1))
    assert unknown_batch["messages"] == {
        "resultCode": "Ok",
        "message": [{"code": "I00004", "text": "No records found."}],
    }
