"""Promo credit over time: valid for the minutes that begin before it expires,
returned to the promotions account by the cron after that (and the ledger
check says so until it is); given back by reading refunds in proportion;
not counted as paid for reviews."""

from clairvora.db import sql
from market_support import MINUTE_MS, active_reading, at, market_pair, now_ms
from promo_support import (
    DAY_MS,
    account,
    admin,
    assert_books_ok,
    charges,
    check_named,
    give_credit,
    grants,
    promo_balance,
    sweep,
)
from support import database, unique

PROMOTIONS = 3


async def test_credit_pays_minutes_begun_before_it_expires_and_the_cron_returns_the_rest():
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    await give_credit(await admin(), client, 300, t, valid_days=1)
    expires = t + DAY_MS
    shown = (await client.get("/v1/wallet", headers=at(expires - 1))).json()
    assert (shown["promo_cents"], shown["promo_next_expiring_cents"]) == (300, 300)
    assert shown["promo_next_expires_at"] is not None
    assert (await client.get("/v1/wallet", headers=at(expires))).json()["promo_cents"] == 0

    accepted = expires - 90_000  # minute 2 begins 30 s before the expiry, minute 3 30 s after
    reading = await active_reading(client, advisor, advisor_id, accepted)
    r = await client.post(f"/v1/readings/{reading['id']}/heartbeat", headers=at(expires + 10_000))
    assert r.json()["billed_minutes"] == 2  # charged after the expiry, begun before it: promo
    await advisor.post(f"/v1/readings/{reading['id']}/heartbeat", headers=at(expires + 10_000))
    r = await client.post(f"/v1/readings/{reading['id']}/heartbeat", headers=at(expires + 30_000))
    assert r.json()["billed_minutes"] == 3
    assert [c["promo_cents"] for c in await charges(reading["id"])] == [100, 100, 0]
    (grant,) = await grants(client_id)
    assert grant["remaining_cents"] == 100 and await promo_balance(client_id) == 100  # expired, not yet swept

    later = expires + 20 * 60_000
    overdue = await check_named("promo_expiry_complete", later)
    assert not overdue["ok"] and str(grant["id"]) in overdue["detail"], overdue
    promotions_before = await account(PROMOTIONS)
    assert await sweep(later) >= 1
    (grant,) = await grants(client_id)
    assert (grant["remaining_cents"], grant["expired_cents"]) == (0, 100)
    assert await promo_balance(client_id) == 0
    assert await account(PROMOTIONS) - promotions_before >= 100
    assert (await check_named("promo_expiry_complete", later))["ok"]
    expiry = await database().first(
        sql(
            "SELECT kind, reference_type FROM transfers WHERE reference_type = 'promo_grant' AND reference_id = ? "
            "AND kind = 'promo_expiry'",
            grant["id"],
        )
    )
    assert expiry is not None
    await assert_books_ok(later)


async def test_a_refund_gives_promo_paid_cents_back_as_promo_and_wallet_paid_cents_to_the_wallet():
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    admin_client = await admin()
    await give_credit(admin_client, client, 200, t)
    reading = await active_reading(client, advisor, advisor_id, t)
    rid = reading["id"]
    for minute in (2, 3, 4):
        await advisor.post(f"/v1/readings/{rid}/heartbeat", headers=at(t + (minute - 1) * MINUTE_MS))
        await client.post(f"/v1/readings/{rid}/heartbeat", headers=at(t + (minute - 1) * MINUTE_MS))
    r = await client.post(f"/v1/readings/{rid}/end", headers=at(t + 3 * MINUTE_MS + 30_000))
    assert r.json()["billed_minutes"] == 4
    assert [c["promo_cents"] for c in await charges(rid)] == [100, 100, 0, 0]
    promotions_before = await account(PROMOTIONS)

    # 400 charged: 200 promo, 200 wallet; the advisor got 280, revenue 60, promotions kept 60.
    def refund(amount: int):
        return admin_client.post(
            f"/v1/admin/readings/{rid}/refund",
            {"amount_cents": amount, "reason": "promo refund"},
            headers=at(t + 4 * MINUTE_MS, **{"idempotency-key": unique("rf")}),
        )

    first = (await refund(100)).json()["refund"]
    assert (first["wallet_cents"], first["promo_cents"]) == (50, 50), first
    assert (first["advisor_cents"], first["platform_cents"], first["promotions_cents"]) == (70, 30, 15), first
    rest = (await refund(300)).json()["refund"]
    assert (rest["wallet_cents"], rest["promo_cents"]) == (150, 150), rest
    assert (rest["advisor_cents"], rest["platform_cents"], rest["promotions_cents"]) == (210, 90, 45), rest
    assert (await client.get("/v1/wallet")).json()["available_cents"] == 1000
    assert await promo_balance(client_id) == 200
    given_back = [g for g in await grants(client_id) if g["source"] == "reading_refund"]
    assert sorted(g["amount_cents"] for g in given_back) == [50, 150]
    assert all(g["expires_at_ms"] == t + 4 * MINUTE_MS + 30 * DAY_MS for g in given_back)
    assert (await advisor.get("/v1/advisors/me/earnings")).json()["balance_cents"] == 0
    assert await account(PROMOTIONS) - promotions_before == -60
    r = await refund(1)
    assert r.status == 409 and r.json()["code"] == "refund_exceeds_charges"
    await assert_books_ok()


async def test_a_reading_paid_only_with_promo_credit_cannot_be_reviewed_one_with_wallet_minutes_can():
    t = now_ms()
    client, _client_id, advisor, advisor_id = await market_pair(rate=100, funds=50)
    await give_credit(await admin(), client, 150, t)
    free = await active_reading(client, advisor, advisor_id, t)  # minute 1: promo only
    await client.post(f"/v1/readings/{free['id']}/end", headers=at(t + 1000))
    r = await client.post(f"/v1/readings/{free['id']}/review", {"rating": 5, "comment": "Free and good"})
    assert r.status == 409 and r.json()["code"] == "reading_not_paid", r.text

    paid = await active_reading(client, advisor, advisor_id, t + 2000)  # minute 1: 50 promo + 50 wallet
    assert [c["promo_cents"] for c in await charges(paid["id"])] == [50]
    await client.post(f"/v1/readings/{paid['id']}/end", headers=at(t + 3000))
    r = await client.post(f"/v1/readings/{paid['id']}/review", {"rating": 4, "comment": "Worth it"})
    assert r.status == 201, r.text
    await assert_books_ok()
