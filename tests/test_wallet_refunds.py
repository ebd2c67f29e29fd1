"""Refunds of unused funds (wallet_refunds.py): the wallet's cash goes back to
the cards it came from through the Authorize.Net stand-in's refundTransaction,
newest settled deposit first, each deposit at most what is left of it; a
refusal returns the money exactly once; only wallet cash ever leaves."""

import asyncio
import json
import time

import local_runtime

from card_support import (
    books_clean,
    deposit,
    in_transit_cents,
    parts_of,
    payment,
    plan,
    refund,
    requests_for,
)
from clairvora import deposit_outcomes, ledger
from clairvora.db import sql
from clairvora.ids import new_id
from money_support import balance, user_with_wallet
from promo_support import admin as promo_admin
from promo_support import give_credit
from support import Client, database, new_user, token_for, unique
from webhook_support import event, post_event
from world import row_counts


async def test_what_is_left_goes_back_newest_deposit_first_split_over_deposits():
    user_id, client = await user_with_wallet("rf")
    older = await deposit(client, 2000)
    newer = await deposit(client, 1500)
    assert await balance(user_id) == 3500

    r = await refund(client, {"amount_cents": 2500})
    assert r.status == 201, r.text
    body = r.json()
    assert body["wallet"]["available_cents"] == 1000 and await balance(user_id) == 1000
    view = body["refund"]
    assert (view["status"], view["amount_cents"], view["refunded_cents"]) == ("completed", 2500, 2500)
    assert [(p["deposit_id"], p["amount_cents"], p["status"]) for p in view["parts"]] == [
        (newer["id"], 1500, "settled"),
        (older["id"], 1000, "settled"),
    ]
    # The wire: one refundTransaction per part, keys in XSD order, the card as the gateway masks it.
    for part, dep in zip(view["parts"], (newer, older), strict=True):
        sent = requests_for(f"R{part['id']}")
        assert len(sent) == 1
        tr = sent[0]["createTransactionRequest"]["transactionRequest"]
        assert list(sent[0]["createTransactionRequest"]) == ["merchantAuthentication", "refId", "transactionRequest"]
        assert list(tr) == ["transactionType", "amount", "payment", "refTransId", "order", "transactionSettings"]
        assert tr["transactionType"] == "refundTransaction" and tr["refTransId"] == dep["gateway_transaction_id"]
        assert tr["amount"] == f"{part['amount_cents'] // 100}.{part['amount_cents'] % 100:02d}"
        assert tr["payment"] == {"creditCard": {"cardNumber": "1111", "expirationDate": "XXXX"}}
        assert part["gateway_transaction_id"] not in (None, "0", dep["gateway_transaction_id"])
    assert (await payment(newer["id"]))["refunded_cents"] == 1500
    assert (await payment(older["id"]))["refunded_cents"] == 1000
    await books_clean()

    # Without an amount: everything refundable now, from what is left of the older deposit.
    rest = await refund(client)
    assert rest.status == 201, rest.text
    assert [(p["deposit_id"], p["amount_cents"]) for p in rest.json()["refund"]["parts"]] == [(older["id"], 1000)]
    assert await balance(user_id) == 0
    empty = await refund(client)
    assert empty.status == 409 and empty.json()["code"] == "nothing_to_refund"

    listed = (await client.get("/v1/wallet/refunds")).json()
    assert [i["id"] for i in listed["items"]] == [rest.json()["refund"]["id"], view["id"]]
    one = await client.get(f"/v1/wallet/refunds/{view['id']}")
    assert one.status == 200 and one.json() == view
    await books_clean()


async def test_a_retry_with_the_same_key_replays_and_refunds_once():
    user_id, client = await user_with_wallet("rfk")
    await deposit(client, 1200)
    key = unique("rk")
    first = await refund(client, {"amount_cents": 700}, key)
    again = await refund(client, {"amount_cents": 700}, key)
    assert first.status == again.status == 201
    assert again.json() == first.json() and again.headers.get("idempotent-replayed") == "true"
    assert await balance(user_id) == 500
    part = first.json()["refund"]["parts"][0]
    assert len(requests_for(f"R{part['id']}")) == 1  # the replay never called the gateway
    other = await refund(client, {"amount_cents": 600}, key)
    assert other.status == 422 and other.json()["code"] == "idempotency_key_reused"


async def test_unsettled_deposits_are_not_refunded_and_nothing_changes():
    user_id, client = await user_with_wallet("rfu")
    await deposit(client, 1800, settled=False)
    before = await row_counts()
    r = await refund(client)
    assert r.status == 409, r.text
    problem = r.json()
    assert problem["code"] == "refund_not_available"
    assert (problem["refundable_now_cents"], problem["settling_cents"]) == (0, 1800)
    assert await row_counts() == before and await balance(user_id) == 1800


async def test_more_than_the_wallet_holds_is_refused():
    user_id, client = await user_with_wallet("rfb")
    await deposit(client, 1000)
    r = await refund(client, {"amount_cents": 1001})
    assert r.status == 409 and r.json()["code"] == "refund_exceeds_balance" and r.json()["available_cents"] == 1000
    assert await balance(user_id) == 1000


async def test_a_refused_refund_returns_the_money_exactly_once():
    user_id, client = await user_with_wallet("rfr")
    dep = await deposit(client, 1600)
    plan(dep["gateway_transaction_id"], "refuse")
    key = unique("rk")
    r = await refund(client, {"amount_cents": 1600}, key)
    assert r.status == 502, r.text
    problem = r.json()
    assert problem["code"] == "refund_failed" and problem["refund"]["status"] == "failed"
    assert problem["refund"]["parts"][0]["failure_code"] == "54"
    assert problem["wallet"]["available_cents"] == 1600 and await balance(user_id) == 1600
    (part,) = await parts_of(problem["refund"]["id"])
    assert (part["state"], part["outcome"], part["gateway_error_code"]) == ("returned", "refused", "54")
    assert (await payment(dep["id"]))["refunded_cents"] == 0
    replay = await refund(client, {"amount_cents": 1600}, key)
    assert replay.status == 502 and replay.json() == problem
    await books_clean()


async def test_a_gateway_failure_once_then_a_new_request_succeeds():
    user_id, client = await user_with_wallet("rff")
    dep = await deposit(client, 900)
    plan(dep["gateway_transaction_id"], "fail")
    failed = await refund(client)
    assert failed.status == 502 and failed.json()["refund"]["parts"][0]["failure_code"] == "57"
    assert await balance(user_id) == 900
    ok = await refund(client)
    assert ok.status == 201 and ok.json()["refund"]["refunded_cents"] == 900
    assert await balance(user_id) == 0
    await books_clean()


async def test_one_part_refused_the_others_refunded():
    user_id, client = await user_with_wallet("rfp")
    older = await deposit(client, 1000)
    newer = await deposit(client, 1000)
    plan(newer["gateway_transaction_id"], "refuse")
    r = await refund(client)
    assert r.status == 201, r.text
    view = r.json()["refund"]
    assert (view["status"], view["refunded_cents"], view["returned_cents"]) == ("partially_completed", 1000, 1000)
    assert [p["status"] for p in view["parts"]] == ["returned", "settled"]
    assert view["parts"][1]["deposit_id"] == older["id"]
    assert await balance(user_id) == 1000
    await books_clean()


async def test_promotional_credit_is_never_refunded():
    user_id, client = await user_with_wallet("rfpromo")
    await deposit(client, 800)
    # Promotional credit beside the wallet, granted the promo feature's way (a code an admin made).
    db = database()
    await give_credit(await promo_admin(), client, 2500, int(time.time() * 1000))
    too_much = await refund(client, {"amount_cents": 801})
    assert too_much.status == 409 and too_much.json()["code"] == "refund_exceeds_balance"
    r = await refund(client)
    assert r.status == 201 and r.json()["refund"]["refunded_cents"] == 800
    held = await ledger.balance_cents(db, ledger.AccountRef(owner_user_id=user_id, kind="client_promo"))
    assert held == 2500 and await balance(user_id) == 0
    await books_clean()


async def test_deposits_past_the_refund_window_are_not_used():
    sub, client = await new_user("rfw")
    user_id = int((await client.get("/v1/me")).json()["id"])
    young = await deposit(client, 1100)
    # Newer in our books, but the gateway settled it 125 days ago (its details say so):
    # past Authorize.Net's 120 days, so it is skipped although it is the newest.
    old = await deposit(client, 1100, settled=False)
    local_runtime.anetControl.ageTransaction(old["gateway_transaction_id"], 125 * 86400)
    r = await refund(client, {"amount_cents": 1100})
    assert r.status == 201, r.text
    assert [p["deposit_id"] for p in r.json()["refund"]["parts"]] == [young["id"]]
    rest = await refund(client, {"amount_cents": 100})
    assert rest.status == 409 and rest.json()["code"] == "refund_not_available", rest.text
    assert rest.json()["refundable_now_cents"] == 0
    # By our own clock too: 121 days after the deposits, no deposit is a candidate at all.
    late_ms = int(time.time() * 1000) + 121 * 86_400_000
    later = Client(await token_for(sub, now_s=late_ms // 1000))
    late = await refund(later, {"amount_cents": 100}, **{"x-test-now-ms": str(late_ms)})
    assert late.status == 409 and late.json()["refundable_now_cents"] == 0, late.text
    assert await balance(user_id) == 1100
    await books_clean()


async def test_our_own_refund_webhook_changes_nothing():
    user_id, client = await user_with_wallet("rfh")
    await deposit(client, 1000)
    r = await refund(client, {"amount_cents": 400})
    part = r.json()["refund"]["parts"][0]
    body = event(
        "net.authorize.payment.refund.created",
        trans_id=part["gateway_transaction_id"],
        invoice=f"R{part['id']}",
        amount_cents=400,
    )
    hook = await post_event(body)
    assert hook.status == 200 and hook.json()["outcome"] == "unknown_transaction", hook.text
    assert await balance(user_id) == 600
    await books_clean()


async def test_the_ledger_check_lists_refunds_in_transit():
    before = await in_transit_cents()
    report = await books_clean()
    assert report["refunds_in_transit"]["cents"] == before
    assert json.dumps(report["chargeback_holds"])  # present and serialisable


async def test_concurrent_refunds_never_refund_more_than_the_wallet_holds():
    user_id, client = await user_with_wallet("rfc")
    dep = await deposit(client, 2000)
    first, second = await asyncio.gather(refund(client, {"amount_cents": 1500}), refund(client, {"amount_cents": 1500}))
    statuses = sorted([first.status, second.status])
    assert statuses == [201, 409], (first.text, second.text)
    loser = first if first.status == 409 else second
    assert loser.json()["code"] in ("refund_conflict", "refund_exceeds_balance", "refund_not_available"), loser.text
    assert await balance(user_id) == 500 and (await payment(dep["id"]))["refunded_cents"] == 1500
    await books_clean()


async def test_someone_elses_refund_answers_like_a_missing_one():
    _uid, owner = await user_with_wallet("rfo")
    await deposit(owner, 1000)
    view = (await refund(owner, {"amount_cents": 100})).json()["refund"]
    _oid, other = await user_with_wallet("rfo2")
    theirs = await other.get(f"/v1/wallet/refunds/{view['id']}")
    missing = await other.get(f"/v1/wallet/refunds/{new_id()}")
    assert theirs.status == missing.status == 404 and theirs.json() == missing.json()
    assert (await other.get("/v1/wallet/refunds")).json() == {"items": [], "next_cursor": None}


async def test_the_list_pages_newest_first():
    _uid, client = await user_with_wallet("rfl")
    await deposit(client, 1000)
    # Distinct times (the order of refunds made within one millisecond is by id).
    start = int(time.time() * 1000)
    ids = [
        (await refund(client, {"amount_cents": 100}, **{"x-test-now-ms": str(start + i * 1000)})).json()["refund"]["id"]
        for i in range(3)
    ]
    page = (await client.get("/v1/wallet/refunds?limit=2")).json()
    assert [i["id"] for i in page["items"]] == ids[::-1][:2] and page["next_cursor"]
    rest = (await client.get(f"/v1/wallet/refunds?limit=2&cursor={page['next_cursor']}")).json()
    assert [i["id"] for i in rest["items"]] == [ids[0]] and rest["next_cursor"] is None
    bad = await client.get("/v1/wallet/refunds?cursor=nope")
    assert bad.status == 400 and bad.json()["field"] == "cursor"
    far = await client.get("/v1/wallet/refunds?cursor=9999999999999999:9999999999999999")
    assert far.status == 200 and len(far.json()["items"]) == 3  # beyond every time: the first page


async def test_deposits_the_gateway_does_not_know_are_skipped():
    """Approved payments whose transaction the gateway never made (demo data's "seed..." ids) or no
    longer finds (E00040) are not refundable: 409 with nothing refundable, never a 500."""
    user_id, client = await user_with_wallet("rfg")
    db = database()
    for trans_id in ("seed" + unique(""), "9" + unique("")[-9:]):
        payment_id = new_id()
        await db.batch(
            [
                sql(
                    """INSERT INTO payments (id, user_id, amount_cents, status, gateway_transaction_id, created_at_ms,
                                             updated_at_ms) VALUES (?, ?, 1000, 'approved', ?, ?, ?)""",
                    payment_id,
                    user_id,
                    trans_id,
                    int(time.time() * 1000),
                    int(time.time() * 1000),
                ),
                *deposit_outcomes.credit_statements(
                    payment_id=payment_id,
                    user_id=user_id,
                    amount_cents=1000,
                    transaction_id=trans_id,
                    response_code="1",
                    now_ms=int(time.time() * 1000),
                ),
            ]
        )
    r = await refund(client)
    assert r.status == 409 and r.json()["code"] == "refund_not_available", r.text
    assert r.json()["refundable_now_cents"] == 0 and await balance(user_id) == 2000


async def test_the_wallet_history_names_refund_kinds_the_api_document_lists():
    _uid, client = await user_with_wallet("rfd")
    await deposit(client, 1000)
    assert (await refund(client, {"amount_cents": 300})).status == 201
    doc = (await client.get("/openapi.json")).json()["components"]["schemas"]["WalletTransaction"]["properties"]
    entries = (await client.get("/v1/wallet/transactions")).json()["items"]
    assert {e["kind"] for e in entries} == {"deposit", "wallet_refund"}
    assert all(e["kind"] in doc["kind"]["enum"] for e in entries)
    assert all(e["reference"]["type"] in doc["reference"]["properties"]["type"]["enum"] for e in entries)
