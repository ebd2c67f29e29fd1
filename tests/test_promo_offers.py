"""Free minutes: a free-minutes promo code's offer and the new-client offer,
each made promo credit when a reading is accepted, in the accept's batch."""

import pytest

from clairvora.db import TriggerAbort, UniqueViolation, sql
from clairvora.ids import new_id
from market_support import MINUTE_MS, at, long_lived_user, market_pair, now_ms, request_reading
from promo_support import admin, assert_books_ok, charges, create_code, env_post, give_credit, grants, redeem, sweep
from support import database

NEW_CLIENT = {"NEW_CLIENT_FREE_MINUTES": "2"}


async def _beat(client, advisor, reading_id: str, t: int) -> dict:
    """Both sides' heartbeats at `t` (so neither is silent past the timeout); the client's reply."""
    await advisor.post(f"/v1/readings/{reading_id}/heartbeat", headers=at(t))
    r = await client.post(f"/v1/readings/{reading_id}/heartbeat", headers=at(t))
    assert r.status == 200, r.text
    return r.json()


async def _offers(client_id: int) -> list[dict]:
    result = await database().all(
        sql("SELECT * FROM free_minute_offers WHERE client_id = ? ORDER BY created_at_ms", client_id)
    )
    return [dict(r) for r in result.rows]


async def test_a_free_minutes_code_pays_the_next_readings_first_minutes_with_no_money_at_all():
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=0)
    code = await create_code(await admin(), t, free_minutes=3, max_cents_per_minute=500)
    r = await redeem(client, code["code"], t)
    assert r.status == 201 and r.json()["redemption"]["free_minutes"] == 3, r.text
    (offer,) = await _offers(client_id)
    assert offer["reading_id"] is None
    reading = (await request_reading(client, advisor_id, t)).json()  # no money: the offer pays minute 1
    accepted = (await advisor.post(f"/v1/readings/{reading['id']}/accept", headers=at(t + 1))).json()
    assert accepted["billed_minutes"] == 1, accepted
    (grant,) = await grants(client_id)
    assert (grant["source"], grant["amount_cents"], grant["expires_at_ms"]) == (
        "free_minutes",
        300,
        t + 1 + 3 * MINUTE_MS,
    )
    assert (await _offers(client_id))[0]["reading_id"] == int(reading["id"])
    for minute in (1, 2):
        await _beat(client, advisor, reading["id"], t + 1 + minute * MINUTE_MS)
    body = await _beat(client, advisor, reading["id"], t + 1 + 3 * MINUTE_MS)
    assert (body["status"], body["billed_minutes"], body["end_reason"]) == ("ended", 3, "insufficient_funds"), body
    assert [c["promo_cents"] for c in await charges(reading["id"])] == [100, 100, 100]
    # used: the next request needs money again
    r = await request_reading(client, advisor_id, t + 5 * MINUTE_MS)
    assert (r.status, r.json()["code"]) == (402, "insufficient_funds"), r.text
    await assert_books_ok()


async def test_a_free_minute_is_worth_at_most_the_cap_and_unused_free_minutes_lapse_with_the_reading():
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=200, funds=1000)
    code = await create_code(await admin(), t, free_minutes=3, max_cents_per_minute=50)
    assert (await redeem(client, code["code"], t)).status == 201
    reading = (await request_reading(client, advisor_id, t)).json()
    await advisor.post(f"/v1/readings/{reading['id']}/accept", headers=at(t))
    (grant,) = await grants(client_id)
    assert grant["amount_cents"] == 150  # 3 x min(200, 50)
    assert [c["promo_cents"] for c in await charges(reading["id"])] == [150]  # promo first, the wallet the rest
    await client.post(f"/v1/readings/{reading['id']}/end", headers=at(t + 1000))
    # nothing left here; but a reading ended early leaves free credit that lapses when the minutes would have
    other, other_id, other_advisor, other_advisor_id = await market_pair(rate=100, funds=1000)
    code = await create_code(await admin(), t, free_minutes=3, max_cents_per_minute=500)
    assert (await redeem(other, code["code"], t)).status == 201
    short = (await request_reading(other, other_advisor_id, t)).json()
    await other_advisor.post(f"/v1/readings/{short['id']}/accept", headers=at(t))
    await other.post(f"/v1/readings/{short['id']}/end", headers=at(t + 1000))
    (left,) = await grants(other_id)
    assert (left["remaining_cents"], left["expires_at_ms"]) == (200, t + 3 * MINUTE_MS)
    assert (await other.get("/v1/wallet", headers=at(t + 3 * MINUTE_MS))).json()["promo_cents"] == 0
    await sweep(t + 3 * MINUTE_MS)
    (left,) = await grants(other_id)
    assert (left["remaining_cents"], left["expired_cents"]) == (0, 200)
    await assert_books_ok()


async def _accept(advisor, reading_id: str, t: int, env: dict[str, str]):
    r = await env_post(advisor, f"/v1/readings/{reading_id}/accept", env, headers=at(t))
    assert r.status == 200, r.text
    return r.json()


async def test_the_new_client_offer_is_given_once_on_the_first_accepted_reading_only():
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=300)  # a card deposit
    first = (await request_reading(client, advisor_id, t)).json()
    await _accept(advisor, first["id"], t, NEW_CLIENT)
    (offer,) = await _offers(client_id)
    assert (offer["source"], offer["minutes"], offer["reading_id"]) == ("new_client", 2, int(first["id"]))
    (grant,) = await grants(client_id)
    assert grant["amount_cents"] == 200
    await _beat(client, advisor, first["id"], t + MINUTE_MS)
    await client.post(f"/v1/readings/{first['id']}/end", headers=at(t + 2 * MINUTE_MS + 1))
    assert [c["promo_cents"] for c in await charges(first["id"])] == [100, 100, 0]
    second = (await request_reading(client, advisor_id, t + 3 * MINUTE_MS)).json()
    await _accept(advisor, second["id"], t + 3 * MINUTE_MS, NEW_CLIENT)
    assert len(await _offers(client_id)) == 1 and [c["promo_cents"] for c in await charges(second["id"])] == [0]
    # in SQL: a second new-client offer for the client, or one on a reading that is not its first
    insert = """INSERT INTO free_minute_offers (id, client_id, source, minutes, max_cents_per_minute, created_at_ms,
                                                expires_at_ms, reading_id, used_at_ms)
                VALUES (?, ?, 'new_client', 2, 100, ?, ?, ?, ?)"""
    with pytest.raises((UniqueViolation, TriggerAbort)):
        await database().run(sql(insert, new_id(), client_id, t, t + 9, int(second["id"]), t + 3 * MINUTE_MS))
    other, other_id, other_advisor, other_advisor_id = await market_pair(rate=100, funds=300)
    older = (await request_reading(other, other_advisor_id, t)).json()
    await other_advisor.post(f"/v1/readings/{older['id']}/accept", headers=at(t))  # the offer is off: none
    await other.post(f"/v1/readings/{older['id']}/end", headers=at(t + 1))
    newer = (await request_reading(other, other_advisor_id, t + 2)).json()
    await other_advisor.post(f"/v1/readings/{newer['id']}/accept", headers=at(t + 3))
    with pytest.raises(TriggerAbort) as refused:
        await database().run(sql(insert, new_id(), other_id, t + 3, t + 9, int(newer["id"]), t + 3))
    assert refused.value.code == "offer_not_eligible"  # the client's first accepted reading was another one
    await assert_books_ok()


async def test_the_new_client_offer_needs_a_card_deposit_unless_configured_otherwise():
    t = now_ms()
    for requires, expect in (("on", 0), ("off", 1)):
        client, client_id = await long_lived_user("nc")
        _c, _cid, advisor, advisor_id = await market_pair(rate=100, funds=0)
        await give_credit(await admin(), client, 100, t)  # money, but no card deposit
        reading = (await request_reading(client, advisor_id, t)).json()
        await _accept(advisor, reading["id"], t, {**NEW_CLIENT, "NEW_CLIENT_OFFER_REQUIRES_DEPOSIT": requires})
        assert len(await _offers(client_id)) == expect, requires
        sources = sorted(g["source"] for g in await grants(client_id))
        assert sources == ["free_minutes"] * expect + ["promo_code"], requires
    await assert_books_ok()
