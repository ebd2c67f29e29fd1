"""Promo credit in the minute charge: spent first, FIFO by expiry, split with
the wallet in one minute, the advisor paid its share by the platform; the SQL
refusing every other order and any way out as cash; the balance the client
sees. Expiry, refunds and reviews: test_promo_lifecycle.py."""

import pytest

from clairvora import ledger
from clairvora.db import CheckViolation, TriggerAbort, sql
from clairvora.ids import new_id
from market_support import MINUTE_MS, active_reading, at, market_pair, now_ms, request_reading
from promo_support import (
    account,
    admin,
    assert_books_ok,
    charges,
    env_post,
    give_credit,
    grants,
    legs_of_minute,
    promo_balance,
)
from support import database, unique

PROMOTIONS, REVENUE = 3, 1


async def test_promo_pays_first_then_the_wallet_within_one_minute_and_the_advisor_keeps_its_share():
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=150)
    promotions_before, revenue_before = await account(PROMOTIONS), await account(REVENUE)
    await give_credit(await admin(), client, 250, t)
    wallet = (await client.get("/v1/wallet", headers=at(t))).json()
    assert (wallet["available_cents"], wallet["promo_cents"], wallet["promo_next_expiring_cents"]) == (150, 250, 250)

    reading = await active_reading(client, advisor, advisor_id, t)
    rid = reading["id"]
    replies = []
    for minute in (2, 3, 4):
        await advisor.post(f"/v1/readings/{rid}/heartbeat", headers=at(t + (minute - 1) * MINUTE_MS))
        r = await client.post(f"/v1/readings/{rid}/heartbeat", headers=at(t + (minute - 1) * MINUTE_MS))
        assert r.status == 200, r.text
        replies.append(r.json())
    # minutes 1-2 promo, minute 3 half promo half wallet, minute 4 the wallet
    assert [c["promo_cents"] for c in await charges(rid)] == [100, 100, 50, 0]
    assert [(b["balance_cents"], b["promo_cents"], b["minutes_left"]) for b in replies] == [
        (150, 50, 2),
        (100, 0, 1),
        (0, 0, 0),
    ]
    assert replies[-1]["low_balance"] is True
    # 30 % fee: the advisor gets 70 a minute whoever paid; a promo-paid cent's rest goes back to promotions
    assert await legs_of_minute(rid, 1) == {"client_promo": -100, "advisor_earnings": 70, "account_3": 30}
    assert await legs_of_minute(rid, 3) == {
        "client_promo": -50,
        "client_wallet": -50,
        "advisor_earnings": 70,
        "account_1": 15,
        "account_3": 15,
    }
    assert await legs_of_minute(rid, 4) == {"client_wallet": -100, "advisor_earnings": 70, "account_1": 30}
    assert await promo_balance(client_id) == 0
    # The platform bore the promotion: -250 granted, +75 back, i.e. the advisor's 175 for 2.5 promo minutes.
    assert await account(PROMOTIONS) - promotions_before == -250 + 30 + 30 + 15
    assert await account(REVENUE) - revenue_before == 15 + 30  # only real money's margin
    earnings = (await advisor.get("/v1/advisors/me/earnings")).json()
    assert earnings["balance_cents"] == 4 * 70
    advisor_view = (await advisor.get(f"/v1/readings/{rid}")).json()
    assert (advisor_view["promo_cents"], advisor_view["minutes_left"], advisor_view["balance_cents"]) == (
        None,
        None,
        None,
    )
    await assert_books_ok()


async def test_promo_alone_can_pay_for_a_reading_and_the_end_counts_it():
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=0)
    r = await request_reading(client, advisor_id, t)
    assert r.status == 402 and r.json()["code"] == "insufficient_funds", r.text
    await give_credit(await admin(), client, 200, t)
    reading = await active_reading(client, advisor, advisor_id, t)
    assert reading["billed_minutes"] == 1
    r = await client.post(f"/v1/readings/{reading['id']}/heartbeat", headers=at(t + 2 * MINUTE_MS))
    body = r.json()
    # minute 2 from promo; minute 3 unpayable: the reading ends when minute 2 does
    assert (body["status"], body["billed_minutes"], body["end_reason"]) == ("ended", 2, "insufficient_funds")
    assert body["ended_at"] is not None and await promo_balance(client_id) == 0
    await assert_books_ok()


async def test_the_advisor_share_of_promo_minutes_is_configurable_and_fixed_at_request():
    t = now_ms()
    client, _client_id, advisor, advisor_id = await market_pair(rate=100, funds=0)
    await give_credit(await admin(), client, 100, t)
    r = await env_post(
        client,
        "/v1/readings",
        {"PROMO_ADVISOR_SHARE_BPS": "4000"},
        {"advisor_id": str(advisor_id), "channel": "chat"},
        at(t, **{"idempotency-key": unique("k")}),
    )
    assert r.status == 201, r.text
    rid = r.json()["id"]
    row = await database().first(sql("SELECT promo_advisor_cents_per_minute AS p FROM readings WHERE id = ?", int(rid)))
    assert row["p"] == 40
    r = await advisor.post(f"/v1/readings/{rid}/accept", headers=at(t + 1))  # default settings now: terms stand
    assert r.status == 200, r.text
    assert await legs_of_minute(rid, 1) == {"client_promo": -100, "advisor_earnings": 40, "account_3": 60}
    with pytest.raises(TriggerAbort) as refused:
        await database().run(sql("UPDATE readings SET promo_advisor_cents_per_minute = 70 WHERE id = ?", int(rid)))
    assert refused.value.code == "reading_terms_fixed"
    await assert_books_ok()


# --- what the SQL refuses ----------------------------------------------------------


def _minute(reading: dict, minute: int, promo_cents: int, takes: list[tuple[int, int]]) -> list:
    from clairvora import billing, promo

    return billing.charge_statements(
        reading, minute, reading["accepted_at_ms"] + 1, None, promo.MinutePay(promo_cents, tuple(takes))
    )


async def _active_with_grants(amounts_and_days: list[tuple[int, int]], funds: int = 1000):
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=funds)
    admin_client = await admin()
    for cents, days in amounts_and_days:
        await give_credit(admin_client, client, cents, t, valid_days=days)
    reading = await active_reading(client, advisor, advisor_id, t)
    from clairvora import billing

    row = await database().first(sql(billing.SELECT_READING, int(reading["id"])))
    return client_id, dict(row), await grants(client_id)


async def test_the_sql_refuses_the_wallet_while_promo_is_valid_and_grants_out_of_order():
    # two grants: the one expiring first (2 days) must be drawn before the other (9 days)
    client_id, reading, (soon, later) = await _active_with_grants([(500, 2), (500, 9)])
    assert (soon["remaining_cents"], later["remaining_cents"]) == (400, 500)  # minute 1 drew the first to expire
    db = database()
    with pytest.raises(TriggerAbort) as refused:
        await db.batch(_minute(reading, 2, 0, []))  # the wallet pays although promo is there
    assert refused.value.code == "promo_not_first"
    with pytest.raises(TriggerAbort) as refused:
        await db.batch(_minute(reading, 2, 100, [(later["id"], 100)]))  # the later grant first
    assert refused.value.code == "promo_grant_order"
    with pytest.raises(TriggerAbort) as refused:
        await db.batch(_minute(reading, 2, 50, [(soon["id"], 100)]))  # the grant moves more than the leg
    assert refused.value.code == "promo_out_of_step"
    with pytest.raises(TriggerAbort) as refused:
        await db.batch(_minute(reading, 2, 100, []))  # promo leg with no grant drawn
    assert refused.value.code == "promo_out_of_step"
    await db.batch(_minute(reading, 2, 100, [(soon["id"], 100)]))  # the right one
    assert await promo_balance(client_id) == 800
    await assert_books_ok()


async def test_promo_credit_can_never_leave_as_cash_nor_become_wallet_money():
    client_id, _reading, _grants = await _active_with_grants([(500, 5)])
    db = database()

    def moving(kind: str, legs: list[ledger.Leg]) -> list:
        return ledger.transfer(transfer_id=new_id(), key=unique("x"), kind=kind, legs=legs, now_ms=now_ms())

    promo_leg = ledger.Leg(ledger.promo_of(client_id), -100)
    for kind, other in (
        ("adjustment", ledger.Leg(ledger.GATEWAY_CLEARING, 100)),  # to the card gateway
        ("reading_refund", ledger.Leg(ledger.GATEWAY_CLEARING, 100)),
        ("wallet_refund", ledger.Leg(ledger.REFUNDS_IN_TRANSIT, 100)),
        ("payout", ledger.Leg(ledger.PAYOUTS_IN_TRANSIT, 100)),
        ("adjustment", ledger.Leg(ledger.wallet_of(client_id), 100)),  # into the wallet
        ("reading_charge", ledger.Leg(ledger.wallet_of(client_id), 100)),
        ("promo_grant", ledger.Leg(ledger.PLATFORM_REVENUE, 100)),
    ):
        with pytest.raises(TriggerAbort) as refused:
            await db.batch(moving(kind, [promo_leg, other]))
        # A refund or payout transfer needs its own record first (0092, 0093), refused before posting.
        first = {"wallet_refund": "wallet_refund_transfer_mismatch", "payout": "payout_reference_invalid"}
        assert refused.value.code in ("promo_not_transferable", first.get(kind)), (kind, refused.value)
    # below zero: the account's CHECK, whatever the grants say
    with pytest.raises(CheckViolation):
        await db.batch(
            ledger.transfer(
                transfer_id=new_id(),
                key=unique("x"),
                kind="promo_expiry",
                legs=[ledger.Leg(ledger.promo_of(client_id), -401), ledger.Leg(ledger.PLATFORM_PROMOTIONS, 401)],
                now_ms=now_ms(),
            )
        )
    assert await promo_balance(client_id) == 400
    await assert_books_ok()
