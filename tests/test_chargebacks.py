"""Chargebacks (chargebacks.py, migration 0092): an admin records one against a
card deposit; the money goes back to the card network even if the wallet goes
below zero; the client is on hold (no reading, deposit or refund: SQL
triggers) until it is resolved; the advisors' side is the platform's or a
clawback of their pending earnings, at most what they hold; a won dispute
returns the money and the clawbacks; the ledger check accounts for all of it."""

from typing import Any

import js
import local_runtime
from pyodide.ffi import to_js

from card_support import books_clean, deposit, deposit_body, payment, refund
from clairvora import ledger
from clairvora.ids import new_id
from money_support import clear_earnings_directly
from support import Resp, database, unique
from webhook_support import event, post_event
from world import Actor, actor, balance, ended_reading, make_admin, make_advisor, row_counts

_admins: list[Actor] = []


async def _admin() -> Actor:
    if not _admins:
        _admins.append(await make_admin(await actor("cbadm")))
    return _admins[0]


async def post_with_vars(a: Actor, path: str, body: Any, key: str | None = None, **overrides: str) -> Resp:
    headers = {"authorization": f"Bearer {a.token}", "content-type": "application/json"}
    headers["idempotency-key"] = key or unique("ck")
    init = to_js(
        {"method": "POST", "headers": to_js(headers, dict_converter=js.Object.fromEntries), "body": _json(body)},
        dict_converter=js.Object.fromEntries,
    )
    result = await local_runtime.dispatchFetch(js.Request.new(local_runtime.baseUrl + path, init), overrides or None)
    data = (await result.response.arrayBuffer()).to_bytes()
    return Resp(int(result.response.status), {k.lower(): v for k, v in result.response.headers.entries()}, data)


def _json(body: Any) -> str:
    import json

    return json.dumps(body)


async def record(dep: dict, body: dict | None = None, key: str | None = None, side: str = "platform") -> Resp:
    return await post_with_vars(
        await _admin(),
        f"/v1/admin/payments/{dep['id']}/chargebacks",
        {"note": "Processor notice: fraud dispute", "reason_code": "10.4", **(body or {})},
        key,
        CHARGEBACK_ADVISOR_SIDE=side,
    )


async def resolve(chargeback_id: str, outcome: str, key: str | None = None) -> Resp:
    return await post_with_vars(
        await _admin(),
        f"/v1/admin/chargebacks/{chargeback_id}/resolve",
        {"outcome": outcome, "note": f"dispute {outcome}"},
        key,
    )


async def pending(advisor_id: int) -> int:
    value = await ledger.balance_cents(database(), ledger.earnings_of(advisor_id))
    assert value is not None
    return value


async def test_a_chargeback_takes_the_money_back_and_holds_the_client_until_resolved():
    client = await actor("cbc")
    advisor = await make_advisor(await actor("cba"))
    first = await deposit(client.client, 3000)
    second = await deposit(client.client, 2000)
    await ended_reading(client.id, advisor.id, minutes=10)  # 1000 cents spent
    earned = await pending(advisor.id)
    key = unique("ck")
    r = await record(second, key=key)
    assert r.status == 201, r.text
    cb = r.json()["chargeback"]
    assert (cb["amount_cents"], cb["advisor_side"], cb["clawback_cents"], cb["state"]) == (2000, "platform", 0, "open")
    assert await balance(client.id) == 2000 and await pending(advisor.id) == earned
    assert (await payment(second["id"]))["charged_back_cents"] == 2000
    again = await record(second, key=key)
    assert again.status == 201 and again.json() == r.json() and again.headers.get("idempotent-replayed") == "true"
    report = await books_clean()
    assert client.id in [int(h["client_id"]) for h in report["chargeback_holds"]["items"]]

    # On hold: refused by the triggers on the INSERTs, nothing written.
    before = await row_counts()
    reading = await client.client.post(
        "/v1/readings", json={"advisor_id": str(advisor.id), "channel": "chat"}, headers={"idempotency-key": unique()}
    )
    assert reading.status == 403 and reading.json()["code"] == "chargeback_hold", reading.text
    dep = await client.client.post("/v1/wallet/deposits", deposit_body(1000), headers={"idempotency-key": unique()})
    assert dep.status == 403 and dep.json()["code"] == "chargeback_hold", dep.text
    ref = await refund(client.client)
    assert ref.status == 403 and ref.json()["code"] == "chargeback_hold", ref.text
    assert await row_counts() == before

    lost = await resolve(cb["id"], "lost")
    assert lost.status == 200 and lost.json()["chargeback"]["state"] == "lost", lost.text
    assert await balance(client.id) == 2000  # the money stays gone
    assert (await payment(second["id"]))["charged_back_cents"] == 2000
    twice = await resolve(cb["id"], "won")
    assert twice.status == 409 and twice.json()["code"] == "chargeback_not_open"
    reading = await client.client.post(
        "/v1/readings", json={"advisor_id": str(advisor.id), "channel": "chat"}, headers={"idempotency-key": unique()}
    )
    assert reading.status == 201, reading.text
    assert (await payment(first["id"]))["charged_back_cents"] == 0
    await books_clean()


async def test_a_spent_deposit_charged_back_takes_the_wallet_below_zero():
    client = await actor("cbn")
    advisor = await make_advisor(await actor("cbna"))
    dep = await deposit(client.client, 1500)
    await ended_reading(client.id, advisor.id, minutes=10)
    r = await record(dep)
    assert r.status == 201, r.text
    assert await balance(client.id) == -1000
    report = await books_clean()
    names = {c["name"]: c["ok"] for c in report["checks"]}
    assert names["negative_wallets_explained"] and names["chargebacks_match_transfers"]
    # Won: the money comes back, the hold is lifted.
    won = await resolve(r.json()["chargeback"]["id"], "won")
    assert won.status == 200, won.text
    assert await balance(client.id) == 500 and (await payment(dep["id"]))["charged_back_cents"] == 0
    await books_clean()


async def test_clawback_takes_each_advisors_share_at_most_what_it_holds_and_a_win_gives_it_back():
    client = await actor("cbk")
    one = await make_advisor(await actor("cbk1"))
    two = await make_advisor(await actor("cbk2"))
    dep = await deposit(client.client, 2000)
    await ended_reading(client.id, one.id, minutes=10, rate=100)  # one earns 700
    await ended_reading(client.id, two.id, minutes=5, rate=200)  # two earns 700
    assert await balance(client.id) == 0
    # Advisor one's earnings have partly cleared (left the pending account): 200 pending remain.
    await _clear(one.id, 500)
    assert (await pending(one.id), await pending(two.id)) == (200, 700)

    r = await record(dep, side="clawback")
    assert r.status == 201, r.text
    cb = r.json()["chargeback"]
    assert cb["advisor_side"] == "clawback" and cb["clawback_cents"] == 900
    assert {c["advisor_id"]: c["amount_cents"] for c in cb["clawbacks"]} == {str(one.id): 200, str(two.id): 700}
    assert (await pending(one.id), await pending(two.id)) == (0, 0)
    assert await balance(client.id) == -2000 + 900  # the client owes what the platform lost
    await books_clean()

    won = await resolve(cb["id"], "won")
    assert won.status == 200, won.text
    assert (await pending(one.id), await pending(two.id)) == (200, 700)
    assert await balance(client.id) == 0
    await books_clean()


async def _clear(advisor_id: int, cents: int) -> None:
    await clear_earnings_directly(advisor_id, cents)


async def test_a_chargeback_never_exceeds_what_is_left_of_the_deposit():
    client = await actor("cbx")
    dep = await deposit(client.client, 1000)
    ref = await refund(client.client, {"amount_cents": 400})
    assert ref.status == 201, ref.text
    too_much = await record(dep, {"amount_cents": 601})
    assert too_much.status == 409 and too_much.json()["code"] == "chargeback_exceeds_deposit"
    assert too_much.json()["left_cents"] == 600
    r = await record(dep)  # default: what is left
    assert r.status == 201 and r.json()["chargeback"]["amount_cents"] == 600
    nothing = await record(dep)
    assert nothing.status == 409 and nothing.json()["code"] == "chargeback_not_possible"
    # A gateway refund webhook for the whole deposit can reverse nothing more.
    body = event(
        "net.authorize.payment.refund.created", trans_id="991" + unique("")[-8:], invoice=dep["id"], amount_cents=1000
    )
    hook = await post_event(body)
    assert hook.status == 200 and hook.json()["outcome"] == "amount_invalid", hook.text
    assert (await payment(dep["id"]))["reversed_cents"] == 0
    await books_clean()


async def test_unknown_or_unapproved_deposits_cannot_be_charged_back():
    client = await actor("cbu")
    missing = await record({"id": str(new_id())})
    assert missing.status == 404
    declined = await client.client.post(
        "/v1/wallet/deposits",
        {
            "amount_cents": 1000,
            "opaque_data": {"data_descriptor": "COMMON.ACCEPT.INAPP.PAYMENT", "data_value": f"tok_declined.{unique()}"},
        },
        headers={"idempotency-key": unique()},
    )
    assert declined.status == 402
    r = await record(declined.json()["deposit"])
    assert r.status == 409 and r.json()["code"] == "chargeback_not_possible"
    non_admin = await client.client.post(
        f"/v1/admin/payments/{declined.json()['deposit']['id']}/chargebacks",
        {"note": "x"},
        headers={"idempotency-key": unique()},
    )
    assert non_admin.status == 403
