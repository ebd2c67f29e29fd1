"""Advisor payouts end to end through the Worker, the PayPal stand-in and the
ledger: a payout on request, its webhook, a payout that fails once and then
succeeds, lost answers resumed by the cron with the same sender_batch_id, and
every refusal before money moves."""

import asyncio
import json

import local_runtime

from clairvora import payout_cron
from clairvora.db import sql
from payout_support import (
    DAY_MS,
    balances,
    clear,
    cleared_advisor,
    deliver_webhooks,
    earn,
    now_ms,
    payout_row,
    receiver,
    request_payout,
    resume,
    set_method,
    settings,
)
from support import database, unique
from world import actor, assert_books_clean, make_admin, make_advisor

_admin: list = []


async def admin():
    if not _admin:
        _admin.append(await make_admin(await actor("padm")))
    return _admin[0]


def _creates(sender_batch_id: str) -> list[dict]:
    """The create calls the stand-in received for one payout, parsed."""
    out = []
    for r in local_runtime.paypalControl.received("/v1/payments/payouts"):
        if r["method"] == "POST" and r["path"] == "/v1/payments/payouts":
            body = json.loads(r["body"])
            if body["sender_batch_header"]["sender_batch_id"] == sender_batch_id:
                out.append(body)
    return out


async def test_a_payout_on_request_is_sent_then_settled_by_its_webhook():
    a, earned, email = await cleared_advisor(20)
    before = await balances(a.id)
    assert before["cleared"] == earned and before["pending"] == 0
    r = await request_payout(a)
    assert r.status == 201, r.text
    payout = r.json()
    assert (payout["status"], payout["amount_cents"], payout["origin"]) == ("sent", earned, "request")
    assert payout["receiver_masked"] == email[0] + "***@example.com" and email not in r.text
    after = await balances(a.id)
    assert after["cleared"] == 0 and after["in_transit"] == before["in_transit"] + earned
    # The wire: one batch of one item, both named by our payout id, the amount a decimal string.
    (create,) = _creates(payout["id"])
    assert create["items"][0]["sender_item_id"] == payout["id"]
    assert create["items"][0]["amount"] == {"value": f"{earned // 100}.{earned % 100:02d}", "currency": "USD"}
    assert create["items"][0]["receiver"] == email and create["items"][0]["recipient_type"] == "EMAIL"
    # PayPal's item notification settles it: in transit -> payout clearing.
    outcomes = {
        json.loads(d["body"])["resource"]["payout_item"]["sender_item_id"]: r for d, r in await deliver_webhooks()
    }
    assert outcomes[payout["id"]].status == 200 and outcomes[payout["id"]].json()["outcome"] == "settled"
    settled = await balances(a.id)
    assert settled["in_transit"] == before["in_transit"] and settled["clearing"] == before["clearing"] + earned
    row = await payout_row(payout["id"])
    assert row["status"] == "succeeded" and row["item_status"] == "SUCCESS" and row["receiver_ciphertext_b64"] is None
    assert (await a.client.get(f"/v1/advisors/me/payouts/{payout['id']}")).json()["status"] == "succeeded"
    listed = (await a.client.get("/v1/advisors/me/payouts")).json()
    assert [p["id"] for p in listed["items"]] == [payout["id"]] and listed["cleared_cents"] == 0
    await assert_books_clean(await admin())


async def test_the_same_key_replays_and_pays_once():
    a, earned, _email = await cleared_advisor(15)
    key = unique("pk")
    first = await request_payout(a, key=key)
    again = await request_payout(a, key=key)
    assert first.status == again.status == 201 and again.headers.get("idempotent-replayed") == "true"
    assert first.json()["id"] == again.json()["id"] and len(_creates(first.json()["id"])) == 1
    other = await request_payout(a, {"amount_cents": earned}, key=key)
    assert other.status == 422 and other.json()["code"] == "idempotency_key_reused"
    await deliver_webhooks()


async def test_a_payout_that_fails_once_then_succeeds():
    a, earned, _email = await cleared_advisor(20, tag="fail")
    start = await balances(a.id)
    r = await request_payout(a)
    assert r.status == 201 and r.json()["status"] == "sent", r.text
    failed_id = r.json()["id"]
    # PayPal fails the item: the money comes back to cleared earnings, once.
    deliveries = await deliver_webhooks()
    mine = [
        (d, resp)
        for d, resp in deliveries
        if json.loads(d["body"])["resource"]["payout_item"]["sender_item_id"] == failed_id
    ]
    assert [json.loads(d["body"])["event_type"] for d, _ in mine] == ["PAYMENT.PAYOUTS-ITEM.FAILED"]
    assert mine[0][1].json()["outcome"] == "returned"
    row = await payout_row(failed_id)
    assert (row["status"], row["item_status"], row["failure_code"]) == ("failed", "FAILED", "RECEIVER_ACCOUNT_LOCKED")
    assert (await balances(a.id))["cleared"] == earned
    # The same notification again changes nothing.
    replay = await deliver_again(mine[0][0])
    assert replay.json()["outcome"] == "duplicate" and (await balances(a.id))["cleared"] == earned
    # The advisor fixes the receiver and asks again: paid.
    assert (await set_method(a, receiver())).status == 200
    r = await request_payout(a)
    assert r.status == 201, r.text
    await deliver_webhooks()
    assert (await payout_row(r.json()["id"]))["status"] == "succeeded"
    end = await balances(a.id)
    assert end["cleared"] == 0 and end["clearing"] == start["clearing"] + earned
    await assert_books_clean(await admin())


async def deliver_again(delivery: dict):
    from support import Client

    headers = {k: str(v) for k, v in dict(delivery["headers"]).items()}
    return await Client().request("POST", "/v1/webhooks/paypal", body=str(delivery["body"]), headers=headers)


async def test_a_lost_create_answer_is_resumed_with_the_same_sender_batch_id():
    a, earned, _email = await cleared_advisor(17, tag="timeout")
    r = await request_payout(a)
    # PayPal made the batch but its answer never came: in transit, requested, 202.
    assert r.status == 202 and r.json()["status"] == "requested", r.text
    pid = r.json()["id"]
    assert (await balances(a.id))["cleared"] == 0
    row = await payout_row(pid)
    assert row["receiver_ciphertext_b64"] is not None and row["attempts"] == 1 and row["amount_cents"] == earned
    # The cron sends it again: PayPal refuses the duplicate and names the batch, which is looked up.
    after = await resume(pid, now_ms() + 5 * 60_000)
    creates = _creates(pid)
    assert len(creates) == 2 and creates[0] == creates[1]
    assert after["status"] in ("sent", "succeeded") and after["paypal_batch_id"], after
    await deliver_webhooks()
    final = await payout_row(pid)
    assert final["status"] == "succeeded" and final["receiver_ciphertext_b64"] is None
    assert (await balances(a.id))["in_transit"] >= 0
    await assert_books_clean(await admin())


async def test_a_create_never_received_is_sent_again_by_the_cron():
    a, _earned, _email = await cleared_advisor(16)
    local_runtime.paypalControl.nextCreate("drop")
    r = await request_payout(a)
    assert r.status == 202 and r.json()["status"] == "requested", r.text
    pid = r.json()["id"]
    after = await resume(pid, now_ms() + 5 * 60_000)
    assert after["status"] == "sent" and len(_creates(pid)) == 2
    await deliver_webhooks()
    assert (await payout_row(pid))["status"] == "succeeded"


async def test_a_refused_create_returns_the_money_at_once():
    a, earned, _email = await cleared_advisor(15, tag="invalid")
    r = await request_payout(a)
    assert r.status == 502 and r.json()["code"] == "payout_refused", r.text
    assert r.json()["payout"]["status"] == "failed" and r.json()["payout"]["failure_code"] == "VALIDATION_ERROR"
    assert (await balances(a.id))["cleared"] == earned
    row = await payout_row(r.json()["payout"]["id"])
    assert row["status"] == "failed" and row["receiver_ciphertext_b64"] is None


async def test_returned_after_success_comes_back_to_cleared_earnings():
    a, earned, _email = await cleared_advisor(18)
    r = await request_payout(a)
    pid = r.json()["id"]
    await deliver_webhooks()
    before = await balances(a.id)
    assert (await payout_row(pid))["status"] == "succeeded"
    assert local_runtime.paypalControl.returnItem(pid)
    deliveries = await deliver_webhooks()
    assert any(resp.json()["outcome"] == "returned" for _d, resp in deliveries)
    after = await balances(a.id)
    assert after["cleared"] == before["cleared"] + earned and after["clearing"] == before["clearing"] - earned
    assert (await payout_row(pid))["status"] == "returned"
    # Returned once: the same return again moves nothing.
    assert local_runtime.paypalControl.returnItem(pid)
    await deliver_webhooks()
    assert (await balances(a.id))["cleared"] == after["cleared"]
    await assert_books_clean(await admin())


async def test_unclaimed_stays_in_transit_until_returned():
    a, earned, _email = await cleared_advisor(19, tag="unclaimed")
    r = await request_payout(a)
    pid = r.json()["id"]
    in_transit = (await balances(a.id))["in_transit"]
    await deliver_webhooks()
    assert (await payout_row(pid))["status"] == "unclaimed"
    assert (await balances(a.id))["in_transit"] == in_transit and (await balances(a.id))["cleared"] == 0
    assert local_runtime.paypalControl.returnItem(pid)
    await deliver_webhooks()
    assert (await payout_row(pid))["status"] == "returned" and (await balances(a.id))["cleared"] == earned


async def test_refusals_before_anything_moves():
    a = await make_advisor(await actor("pref"))
    r = await request_payout(a)
    assert r.status == 409 and r.json()["code"] == "payout_method_required"
    assert (await set_method(a, receiver())).status == 200
    r = await request_payout(a)
    assert r.status == 422 and r.json()["code"] == "payout_below_minimum" and r.json()["cleared_cents"] == 0
    await earn(a.id, 30, now_ms() - 8 * DAY_MS)
    r = await request_payout(a)
    assert r.status == 422, "earnings still pending cannot be paid out"
    await clear(a.id, now_ms())
    cleared = (await balances(a.id))["cleared"]
    r = await request_payout(a, {"amount_cents": cleared + 1})
    assert r.status == 409 and r.json()["code"] == "insufficient_cleared_earnings"
    assert r.json()["cleared_cents"] == cleared
    client = await actor("pcli")
    r = await request_payout(client)
    assert r.status == 404
    rows = await database().first(sql("SELECT count(*) AS n FROM payouts WHERE advisor_id = ?", a.id))
    assert rows["n"] == 0


async def test_concurrent_payouts_cannot_overdraw_cleared_earnings():
    a, earned, _email = await cleared_advisor(20)
    results = await asyncio.gather(*(request_payout(a, {"amount_cents": earned}) for _ in range(3)))
    statuses = sorted(r.status for r in results)
    assert statuses.count(201) == 1 and statuses.count(409) == 2, [r.text for r in results]
    assert (await balances(a.id))["cleared"] == 0
    await deliver_webhooks()
    await assert_books_clean(await admin())


async def test_an_automatic_payout_pays_the_whole_cleared_balance_once_due():
    a, earned, _email = await cleared_advisor(80)  # 5600 cents: at least PAYOUT_AUTO_MIN_CENTS
    db, s = database(), settings()
    assert await payout_cron.auto_payout_for(db, s, a.id, now_ms()) is True
    assert await payout_cron.auto_payout_for(db, s, a.id, now_ms()) is None, "paid: no longer due"
    listed = (await a.client.get("/v1/advisors/me/payouts")).json()
    (payout,) = listed["items"]
    assert (payout["origin"], payout["amount_cents"], payout["status"]) == ("schedule", earned, "sent")
    await deliver_webhooks()
    assert (await payout_row(payout["id"]))["status"] == "succeeded"
    await assert_books_clean(await admin())
