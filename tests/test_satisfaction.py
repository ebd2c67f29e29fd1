"""Satisfaction credit: a client's claim within the window, capped per claim
and per period, paid as promo credit; an admin's grant; the clawback switch
taking at most what the advisor's pending earnings hold; every refusal with
its code, judged again by the claim row's trigger."""

import pytest

from clairvora.db import TriggerAbort, sql
from clairvora.ids import new_id
from market_support import MINUTE_MS, active_reading, at, market_pair, now_ms
from money_support import clear_earnings_directly
from promo_support import (
    DAY_MS,
    account,
    admin,
    assert_books_ok,
    env_post,
    give_credit,
    grants,
    promo_balance,
)
from support import database, unique

CLAWBACK = {"SATISFACTION_CLAWBACK": "on"}
PROMOTIONS = 3


async def _ended(rate: int = 100, funds: int = 1000, minutes: int = 4, t: int | None = None):
    """(client, client_id, advisor, advisor_id, reading id, ended at): `minutes` paid from the wallet."""
    t = now_ms() if t is None else t
    client, client_id, advisor, advisor_id = await market_pair(rate=rate, funds=funds)
    reading = await active_reading(client, advisor, advisor_id, t)
    for minute in range(2, minutes + 1):
        await advisor.post(f"/v1/readings/{reading['id']}/heartbeat", headers=at(t + (minute - 1) * MINUTE_MS))
        await client.post(f"/v1/readings/{reading['id']}/heartbeat", headers=at(t + (minute - 1) * MINUTE_MS))
    end = t + (minutes - 1) * MINUTE_MS + 1000
    r = await client.post(f"/v1/readings/{reading['id']}/end", headers=at(end))
    assert r.json()["billed_minutes"] == minutes, r.text
    return client, client_id, advisor, advisor_id, reading["id"], end


def _claim(client, rid: str, t: int, key: str | None = None, reason: str = "It did not help"):
    return client.post(
        f"/v1/readings/{rid}/satisfaction-claim",
        {"reason": reason},
        headers=at(t, **{"idempotency-key": key or unique()}),
    )


async def test_a_claim_within_the_window_pays_what_the_reading_cost_as_promo_credit_once():
    client, client_id, advisor, _aid, rid, end = await _ended()
    earnings_before = (await advisor.get("/v1/advisors/me/earnings")).json()["balance_cents"]
    key = unique("sk")
    r = await _claim(client, rid, end + 3600_000, key)
    assert r.status == 201, r.text
    claim = r.json()["claim"]
    assert (claim["amount_cents"], claim["clawback_cents"], claim["platform_cents"], claim["origin"]) == (
        400,
        0,
        400,
        "client",
    )
    again = await _claim(client, rid, end + 3600_000, key)
    assert again.json() == r.json() and again.headers.get("idempotent-replayed") == "true"
    (grant,) = await grants(client_id)
    assert (grant["source"], grant["amount_cents"]) == ("satisfaction", 400)
    assert (await client.get("/v1/wallet", headers=at(end + 3600_000))).json()["promo_cents"] == 400
    assert (await advisor.get("/v1/advisors/me/earnings")).json()["balance_cents"] == earnings_before  # clawback off
    twice = await _claim(client, rid, end + 3600_000)
    assert (twice.status, twice.json()["code"]) == (409, "claim_already_made")
    await assert_books_ok()


async def test_claims_are_refused_outside_the_window_beyond_the_period_limit_and_for_unpaid_readings():
    client, _client_id, advisor, advisor_id, rid, end = await _ended()
    late = await _claim(client, rid, end + 72 * 3600_000 + 1)
    assert (late.status, late.json()["code"]) == (409, "claim_window_closed")
    r = await advisor.post(
        f"/v1/readings/{rid}/satisfaction-claim", {"reason": "x"}, headers=at(end, **{"idempotency-key": unique()})
    )
    assert r.status == 403, r.text
    stranger, _sid, _a, _aid = await market_pair(funds=0)
    assert (await _claim(stranger, rid, end)).status == 404
    assert (await _claim(client, rid, end + 1000)).status == 201
    # a second reading of the same client within 30 days: the period's one claim is used. (The 400 of
    # promo credit the claim gave pays its first four minutes; the fifth is paid from the wallet.)
    t2 = end + 2 * DAY_MS
    reading = await active_reading(client, advisor, advisor_id, t2)
    for minute in range(2, 6):
        await advisor.post(f"/v1/readings/{reading['id']}/heartbeat", headers=at(t2 + (minute - 1) * MINUTE_MS))
        await client.post(f"/v1/readings/{reading['id']}/heartbeat", headers=at(t2 + (minute - 1) * MINUTE_MS))
    r = await client.post(f"/v1/readings/{reading['id']}/end", headers=at(t2 + 4 * MINUTE_MS + 1000))
    assert r.json()["billed_minutes"] == 5, r.text
    t2 += 4 * MINUTE_MS
    limited = await _claim(client, reading["id"], t2 + 2000)
    assert (limited.status, limited.json()["code"]) == (409, "claim_limit_reached")
    more = await env_post(
        client,
        f"/v1/readings/{reading['id']}/satisfaction-claim",
        {"SATISFACTION_CLAIMS_PER_PERIOD": "2"},
        {"reason": "Again"},
        at(t2 + 3000, **{"idempotency-key": unique()}),
    )
    assert more.status == 201 and more.json()["claim"]["amount_cents"] == 100, more.text
    # still active, or paid only by promo credit: nothing to claim for
    active = await active_reading(client, advisor, advisor_id, t2 + 4000)
    r = await _claim(client, active["id"], t2 + 5000)
    assert (r.status, r.json()["code"]) == (409, "reading_not_claimable")
    await client.post(f"/v1/readings/{active['id']}/end", headers=at(t2 + 6000))
    free_client, free_id, free_advisor, free_advisor_id = await market_pair(funds=0)
    await give_credit(await admin(), free_client, 100, t2)
    free = await active_reading(free_client, free_advisor, free_advisor_id, t2)
    await free_client.post(f"/v1/readings/{free['id']}/end", headers=at(t2 + 1000))
    r = await _claim(free_client, free["id"], t2 + 2000)
    assert (r.status, r.json()["code"]) == (409, "reading_not_claimable")
    assert await promo_balance(free_id) == 0
    await assert_books_ok()


async def test_a_claim_is_capped_per_claim():
    client, _cid, _adv, _aid, rid, end = await _ended(rate=1000, funds=5000, minutes=3)
    r = await _claim(client, rid, end)
    assert r.json()["claim"]["amount_cents"] == 2500, r.text


async def test_clawback_takes_at_most_the_pending_earnings_and_the_platform_bears_the_rest():
    client, _cid, advisor, _advisor_id, rid, end = await _ended()  # advisor earned 4 x 70 = 280 here
    promotions_before = await account(PROMOTIONS)
    r = await env_post(
        client,
        f"/v1/readings/{rid}/satisfaction-claim",
        CLAWBACK,
        {"reason": "No"},
        at(end, **{"idempotency-key": unique()}),
    )
    claim = r.json()["claim"]
    assert (claim["amount_cents"], claim["clawback_cents"], claim["platform_cents"]) == (400, 280, 120), r.text
    assert (await advisor.get("/v1/advisors/me/earnings")).json()["balance_cents"] == 0
    assert await account(PROMOTIONS) - promotions_before == -400 + 280
    # earnings already moved on (cleared): the clawback takes what is still pending
    client2, _c2, advisor2, advisor2_id, rid2, end2 = await _ended()
    await clear_earnings_directly(advisor2_id, 230, end2)
    r = await env_post(
        client2,
        f"/v1/readings/{rid2}/satisfaction-claim",
        CLAWBACK,
        {"reason": "No"},
        at(end2, **{"idempotency-key": unique()}),
    )
    assert (r.json()["claim"]["clawback_cents"], r.json()["claim"]["platform_cents"]) == (50, 350), r.text
    assert (await advisor2.get("/v1/advisors/me/earnings")).json()["balance_cents"] == 0
    await assert_books_ok()


async def test_admins_grant_any_amount_up_to_what_was_paid_without_the_window():
    client, client_id, _adv, _aid, rid, end = await _ended()
    a = await admin()

    def grant(amount: int, t: int):
        return a.post(
            f"/v1/admin/readings/{rid}/satisfaction-credit",
            {"amount_cents": amount, "reason": "Goodwill"},
            headers=at(t, **{"idempotency-key": unique()}),
        )

    r = await grant(401, end + 5 * DAY_MS)
    assert (r.status, r.json()["code"]) == (409, "claim_exceeds_paid"), r.text
    r = await grant(150, end + 5 * DAY_MS)  # long after the client's window
    assert r.status == 201 and r.json()["claim"]["origin"] == "admin", r.text
    assert await promo_balance(client_id) == 150
    r = await _claim(client, rid, end)
    assert (r.status, r.json()["code"]) == (409, "claim_already_made")
    assert (
        await client.post(
            f"/v1/admin/readings/{rid}/satisfaction-credit",
            {"amount_cents": 1, "reason": "x"},
            headers={"idempotency-key": unique()},
        )
    ).status == 403
    await assert_books_ok()


async def test_the_claim_row_itself_refuses_what_the_policy_forbids():
    _client, client_id, _adv, advisor_id, rid, end = await _ended()
    insert = """INSERT INTO satisfaction_claims (id, reading_id, client_id, advisor_id, origin, amount_cents, reason,
                  window_seconds, max_cents, period_days, claims_per_period, requested_by_user_id, created_at_ms)
                VALUES (?, ?, ?, ?, 'client', ?, 'x', ?, ?, 30, 1, ?, ?)"""
    db = database()
    for amount, window_s, cap, at_ms, code in (
        (100, 60, 2500, end + 61_000, "claim_window_closed"),
        (401, 3600, 2500, end, "claim_exceeds_paid"),
        (300, 3600, 200, end, "claim_exceeds_paid"),
    ):
        with pytest.raises(TriggerAbort) as refused:
            await db.run(
                sql(insert, new_id(), int(rid), client_id, advisor_id, amount, window_s, cap, client_id, at_ms)
            )
        assert refused.value.code == code
