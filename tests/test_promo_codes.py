"""Promo codes: the admin routes, redemption and its refusals, and the limits
held by the redeeming statement under concurrent redemptions."""

import asyncio

from clairvora.clock import rfc3339
from clairvora.db import sql
from market_support import at, funded_client, long_lived_user, now_ms
from promo_support import DAY_MS, admin, assert_books_ok, create_code, grants, promo_balance, redeem
from support import database, unique


async def _count(code_id: str) -> tuple[int, int]:
    row = await database().first(
        sql(
            """SELECT c.redemptions_count AS n, (SELECT count(*) FROM promo_redemptions d WHERE d.promo_code_id = c.id) AS d
               FROM promo_codes c WHERE c.id = ?""",
            int(code_id),
        )
    )
    return int(row["n"]), int(row["d"])


async def test_admins_create_list_get_and_disable_codes():
    a = await admin()
    t = now_ms()
    code = await create_code(a, t, credit_cents=750, max_redemptions=5, per_client_limit=2, note="launch")
    assert (code["kind"], code["credit_cents"], code["status"], code["redemptions_count"]) == (
        "credit",
        750,
        "active",
        0,
    )
    assert code["code"] == code["code"].upper() and code["per_client_limit"] == 2
    minutes = await create_code(a, t + 1, free_minutes=3, max_cents_per_minute=250)
    assert (minutes["kind"], minutes["free_minutes"], minutes["max_cents_per_minute"]) == ("free_minutes", 3, 250)
    # newest first, keyset-paged (other tests' codes may be newer: walk until both are seen)
    seen: list[str] = []
    cursor = None
    while code["id"] not in seen:
        page = (await a.get("/v1/admin/promo-codes?limit=2" + (f"&cursor={cursor}" if cursor else ""))).json()
        assert len(page["items"]) <= 2
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        assert cursor or code["id"] in seen, "the code's page never came"
    assert seen.index(minutes["id"]) == seen.index(code["id"]) - 1 and len(seen) == len(set(seen))
    assert (await a.get(f"/v1/admin/promo-codes/{code['id']}")).json() == code
    key = unique("dk")
    r = await a.post(f"/v1/admin/promo-codes/{code['id']}/disable", headers=at(t + 1, **{"idempotency-key": key}))
    assert r.status == 200 and r.json()["status"] == "disabled", r.text
    again = await a.post(f"/v1/admin/promo-codes/{code['id']}/disable", headers=at(t + 2, **{"idempotency-key": key}))
    assert again.json() == r.json() and again.headers.get("idempotent-replayed") == "true"
    other = await a.post(
        f"/v1/admin/promo-codes/{code['id']}/disable", headers=at(t + 3, **{"idempotency-key": unique()})
    )
    assert other.json()["disabled_at"] == r.json()["disabled_at"]  # disabled once, for good


async def test_bad_codes_are_refused_and_change_nothing():
    a = await admin()
    t = now_ms()
    base = {"code": unique("BAD").upper(), "valid_until": rfc3339(t + DAY_MS), "max_redemptions": 1}
    for body, status, code in (
        ({**base, "credit_cents": 100, "free_minutes": 2}, 422, "promo_code_invalid"),
        (base, 422, "promo_code_invalid"),
        ({**base, "credit_cents": 100, "max_cents_per_minute": 50}, 422, "promo_code_invalid"),
        ({**base, "credit_cents": 100, "valid_until": rfc3339(t - 1000)}, 422, "promo_code_invalid"),
        ({**base, "credit_cents": 100, "code": "a b"}, 400, "invalid_request"),
        ({**base, "credit_cents": 0}, 400, "invalid_request"),
        ({**base, "credit_cents": 100, "valid_until": "2031-02-30T00:00:00Z"}, 400, "invalid_request"),
    ):
        r = await a.post("/v1/admin/promo-codes", body, headers=at(t, **{"idempotency-key": unique()}))
        assert (r.status, r.json()["code"]) == (status, code), (body, r.text)
    made = await create_code(a, t, code=base["code"].lower(), credit_cents=100)
    r = await a.post(
        "/v1/admin/promo-codes", {**base, "credit_cents": 300}, headers=at(t, **{"idempotency-key": unique()})
    )
    assert (r.status, r.json()["code"]) == (409, "promo_code_exists"), r.text
    assert (await a.get(f"/v1/admin/promo-codes/{made['id']}")).json()["credit_cents"] == 100


async def test_redeeming_a_credit_code_grants_promo_credit_once_per_client_with_replay():
    a = await admin()
    t = now_ms()
    code = await create_code(a, t, credit_cents=400, credit_valid_days=10)
    client, client_id = await funded_client(0)
    key = unique("rk")
    r = await redeem(client, code["code"].lower(), t, key)
    assert r.status == 201, r.text
    assert r.json()["redemption"]["credit_cents"] == 400
    assert r.json()["redemption"]["expires_at"] == rfc3339(t + 10 * DAY_MS)
    reused = await redeem(client, code["code"], t, key)  # the same key, another body
    assert (reused.status, reused.json()["code"]) == (422, "idempotency_key_reused")
    same = await redeem(client, code["code"].lower(), t, key)
    assert same.json() == r.json() and same.headers.get("idempotent-replayed") == "true"
    wallet = (await client.get("/v1/wallet", headers=at(t))).json()
    assert (wallet["available_cents"], wallet["promo_cents"]) == (0, 400)
    again = await redeem(client, code["code"], t)
    assert (again.status, again.json()["code"]) == (409, "promo_code_limit_reached")
    assert await promo_balance(client_id) == 400 and len(await grants(client_id)) == 1
    assert await _count(code["id"]) == (1, 1)
    await assert_books_ok()


async def test_every_refusal_has_its_code_and_writes_nothing():
    a = await admin()
    t = now_ms()
    client, client_id = await long_lived_user("rf")  # its token outlives the day the clock moves
    later = await create_code(a, t, valid_from=rfc3339(t + DAY_MS), valid_until=rfc3339(t + 2 * DAY_MS))
    brief = await create_code(a, t, valid_until=rfc3339(t + 1000))
    withdrawn = await create_code(a, t)
    await a.post(f"/v1/admin/promo-codes/{withdrawn['id']}/disable", headers=at(t, **{"idempotency-key": unique()}))
    single = await create_code(a, t, max_redemptions=1)
    other, _other_id = await funded_client(0)
    assert (await redeem(other, single["code"], t)).status == 201
    for code, when, status, problem in (
        ("NO-SUCH-CODE-" + unique("N")[-8:].upper(), t, 404, "promo_code_not_found"),
        (later["code"], t, 409, "promo_code_not_started"),
        (brief["code"], t + 1000, 409, "promo_code_expired"),
        (withdrawn["code"], t, 409, "promo_code_disabled"),
        (single["code"], t, 409, "promo_code_exhausted"),
    ):
        r = await redeem(client, code, when)
        assert (r.status, r.json()["code"]) == (status, problem), (code, r.text)
    assert await grants(client_id) == [] and await promo_balance(client_id) == 0
    assert await _count(single["id"]) == (1, 1)
    assert (await redeem(client, later["code"], t + DAY_MS)).status == 201  # once its window opens


async def test_concurrent_redemptions_never_exceed_the_total_or_the_per_client_limit():
    a = await admin()
    t = now_ms()
    code = await create_code(a, t, credit_cents=100, max_redemptions=3)
    clients = [await funded_client(0) for _ in range(8)]
    answers = await asyncio.gather(*(redeem(c, code["code"], t) for c, _id in clients))
    statuses = sorted(r.status for r in answers)
    assert statuses == [201] * 3 + [409] * 5, [r.text for r in answers]
    assert {r.json()["code"] for r in answers if r.status == 409} == {"promo_code_exhausted"}
    assert await _count(code["id"]) == (3, 3)
    assert sum([await promo_balance(cid) for _c, cid in clients]) == 300

    per_client = await create_code(a, t, credit_cents=100, max_redemptions=100, per_client_limit=2)
    client, _client_id = clients[0]
    answers = await asyncio.gather(*(redeem(client, per_client["code"], t) for _ in range(6)))
    assert sorted(r.status for r in answers) == [201] * 2 + [409] * 4, [r.text for r in answers]
    assert {r.json()["code"] for r in answers if r.status == 409} == {"promo_code_limit_reached"}
    assert await _count(per_client["id"]) == (2, 2)
    await assert_books_ok()


async def test_the_redeeming_statement_itself_refuses_past_the_limit():
    """Without the handler: an INSERT of one more redemption is refused by the SQL."""
    import pytest

    from clairvora.db import TriggerAbort
    from clairvora.ids import new_id

    a = await admin()
    t = now_ms()
    code = await create_code(a, t, max_redemptions=1)
    client, client_id = await funded_client(0)
    assert (await redeem(client, code["code"], t)).status == 201
    insert = "INSERT INTO promo_redemptions (id, promo_code_id, client_id, redeemed_at_ms) VALUES (?, ?, ?, ?)"
    with pytest.raises(TriggerAbort) as refused:
        await database().run(sql(insert, new_id(), int(code["id"]), client_id, t))
    assert refused.value.code == "promo_code_exhausted"
