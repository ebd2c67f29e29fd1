"""PayPal's item notifications: verified with PayPal before they change
anything, applied once, and only to the payout they match."""

import asyncio
import json
from typing import Any

import js
import local_runtime
from pyodide.ffi import to_js

from clairvora.db import sql
from payout_support import WEBHOOK, balances, cleared_advisor, deliver_webhooks, payout_row, request_payout
from support import Client, Resp, database, unique
from world import assert_books_clean

control = local_runtime.paypalControl


async def _sent_payout(minutes: int = 15, tag: str = "") -> tuple[Any, int, str, list[dict]]:
    """(advisor, amount, payout id, its queued notifications, not delivered)."""
    a, earned, _email = await cleared_advisor(minutes, tag=tag)
    r = await request_payout(a)
    assert r.status == 201, r.text
    pid = r.json()["id"]
    mine, others = [], []
    for d in control.takeWebhooks():
        (mine if json.loads(d["body"])["resource"]["payout_item"]["sender_item_id"] == pid else others).append(d)
    for d in others:  # earlier tests' leftovers
        await _post(d)
    return a, earned, pid, mine


async def _post(delivery: dict, body: str | None = None, drop: str | None = None) -> Resp:
    headers = {k: str(v) for k, v in dict(delivery["headers"]).items() if k != drop}
    return await Client().request(
        "POST", WEBHOOK, body=body if body is not None else str(delivery["body"]), headers=headers
    )


def _verifications() -> int:
    return int(control.counts()["verifications"])


async def test_a_tampered_or_unsigned_notification_changes_nothing():
    a, _earned, pid, (delivery,) = await _sent_payout()
    event = json.loads(delivery["body"])
    event["resource"]["transaction_status"] = "FAILED"
    event["event_type"] = "PAYMENT.PAYOUTS-ITEM.FAILED"
    r = await _post(delivery, body=json.dumps(event, separators=(",", ":")))
    assert r.status == 401 and r.json()["code"] == "invalid_signature", r.text
    r = await _post(delivery, drop="paypal-transmission-sig")
    assert r.status == 401
    # Signed for another webhook subscription (its id is part of what is signed).
    r = await fetch_raw(delivery, PAYPAL_WEBHOOK_ID="1JE4291016473214C")
    assert r.status == 401
    row = await payout_row(pid)
    assert row["status"] == "sent" and (await balances(a.id))["cleared"] == 0
    # The genuine one is applied.
    r = await _post(delivery)
    assert r.status == 200 and r.json()["outcome"] == "settled"


async def fetch_raw(delivery: dict, **overrides: str) -> Resp:
    init = to_js(
        {
            "method": "POST",
            "headers": to_js(dict(delivery["headers"]), dict_converter=js.Object.fromEntries),
            "body": str(delivery["body"]),
        },
        dict_converter=js.Object.fromEntries,
    )
    result = await local_runtime.dispatchFetch(js.Request.new(local_runtime.baseUrl + WEBHOOK, init), overrides)
    body = (await result.response.arrayBuffer()).to_bytes()
    return Resp(int(result.response.status), {k.lower(): v for k, v in result.response.headers.entries()}, body)


async def test_what_names_nothing_of_ours_is_answered_without_asking_paypal():
    before = _verifications()
    batch_event = control.signEvent(
        {"id": f"WH-{unique('b')}", "event_type": "PAYMENT.PAYOUTSBATCH.SUCCESS", "resource": {}}
    )
    r = await _post(batch_event)
    assert r.status == 200 and r.json()["outcome"] == "ignored"
    stranger = control.signEvent(
        {
            "id": f"WH-{unique('s')}",
            "event_type": "PAYMENT.PAYOUTS-ITEM.SUCCEEDED",
            "resource": {
                "payout_item_id": "X",
                "transaction_status": "SUCCESS",
                "payout_item": {"sender_item_id": "1099511627777", "amount": {"value": "10.00", "currency": "USD"}},
            },
        }
    )
    r = await _post(stranger)
    assert r.status == 200 and r.json()["outcome"] == "ignored"
    assert _verifications() == before
    assert (await Client().request("POST", WEBHOOK, body="[1]", headers=dict(stranger["headers"]))).status == 400


async def test_an_item_that_does_not_match_its_payout_is_recorded_and_moves_nothing():
    _a, _earned, pid, (delivery,) = await _sent_payout()
    event = json.loads(delivery["body"])
    event["id"] = f"WH-{unique('m')}"
    event["resource"]["payout_item"]["amount"]["value"] = "999.00"
    r = await _post(control.signEvent(event))
    assert r.status == 200 and r.json()["outcome"] == "mismatch"
    assert (await payout_row(pid))["status"] == "sent"
    assert (await _post(delivery)).json()["outcome"] == "settled"


async def test_paypal_unreachable_is_503_so_paypal_delivers_again():
    _a, _earned, pid, (delivery,) = await _sent_payout()
    r = await fetch_raw(delivery, PAYPAL_ENDPOINT="http://127.0.0.1:9")
    assert r.status == 503 and r.headers.get("retry-after"), r.text
    assert (await payout_row(pid))["status"] == "sent"
    assert (await _post(delivery)).json()["outcome"] == "settled"


async def test_failed_then_returned_returns_the_money_once():
    a, earned, pid, (failed,) = await _sent_payout(tag="fail")
    assert (await _post(failed)).json()["outcome"] == "returned"
    event = json.loads(failed["body"])
    event.update(id=f"WH-{unique('r')}", event_type="PAYMENT.PAYOUTS-ITEM.RETURNED")
    event["resource"]["transaction_status"] = "RETURNED"
    r = await _post(control.signEvent(event))
    assert r.status == 200 and r.json()["outcome"] == "no_change"
    assert (await balances(a.id))["cleared"] == earned and (await payout_row(pid))["status"] == "failed"


async def test_the_same_notification_delivered_twice_at_once_applies_once():
    a, earned, pid, (delivery,) = await _sent_payout()
    before = await balances(a.id)
    answers = await asyncio.gather(_post(delivery), _post(delivery), _post(delivery))
    outcomes = sorted(r.json()["outcome"] for r in answers)
    assert outcomes.count("settled") == 1 and set(outcomes) <= {"settled", "duplicate"}, outcomes
    after = await balances(a.id)
    assert after["clearing"] == before["clearing"] + earned
    events = await database().first(
        sql("SELECT count(*) AS n FROM paypal_webhook_events WHERE payout_id = ?", int(pid))
    )
    assert events["n"] == 1
    await deliver_webhooks()
    await assert_books_clean()
