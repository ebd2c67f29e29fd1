"""Spending limits the client sets (issue 13, item 9): daily and monthly deposit
limits and a self-exclusion period on /v1/me. Lowering a limit (or starting,
extending self-exclusion) takes effect at once; raising (or shortening) only
after 24 h, stored as a pending value with its effective time. Enforced by
triggers on the very INSERT of the deposit claim and of the reading request,
so concurrent requests cannot pass a limit together."""

import asyncio

from clairvora.db import TriggerAbort, sql
from clairvora.ids import new_id
from market_support import at, long_lived_user, market_pair, now_ms, request_reading
from support import Client, database, unique
from world import row_counts

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def deposit_body(amount: int) -> dict:
    return {
        "amount_cents": amount,
        "opaque_data": {"data_descriptor": "COMMON.ACCEPT.INAPP.PAYMENT", "data_value": f"tok_approved.{unique()}"},
    }


async def deposit(client: Client, amount: int, t: int):
    return await client.post(
        "/v1/wallet/deposits", deposit_body(amount), headers=at(t, **{"idempotency-key": unique()})
    )


async def patch_me(client: Client, t: int, **changes):
    r = await client.get("/v1/me", headers=at(t))
    assert r.status == 200, r.text
    return await client.patch("/v1/me", json=changes, headers=at(t, **{"if-match": r.headers["etag"]}))


async def test_no_limits_by_default_and_lowering_takes_effect_at_once():
    client, _uid = await long_lived_user("lim")
    t = now_ms()
    r = await client.get("/v1/me", headers=at(t))
    assert r.json()["spending_limits"] == {
        "daily_deposit_limit_cents": None,
        "monthly_deposit_limit_cents": None,
        "self_excluded_until": None,
        "pending": {
            "daily_deposit_limit_cents": None,
            "monthly_deposit_limit_cents": None,
            "self_excluded_until": None,
        },
    }
    r = await patch_me(client, t, daily_deposit_limit_cents=2000)
    assert r.status == 200, r.text
    limits_now = r.json()["spending_limits"]
    assert (
        limits_now["daily_deposit_limit_cents"] == 2000 and limits_now["pending"]["daily_deposit_limit_cents"] is None
    )

    r = await deposit(client, 1500, t + 1)
    assert r.status == 201, r.text
    before = await row_counts()
    r = await deposit(client, 1000, t + 2)
    assert r.status == 422, r.text
    problem = r.json()
    assert problem["code"] == "deposit_limit_exceeded"
    assert problem["window"] == "daily" and problem["limit_cents"] == 2000 and problem["remaining_cents"] == 500
    assert await row_counts() == before, "a refused deposit writes nothing (no payment, no key)"
    r = await deposit(client, 500, t + 3)
    assert r.status == 201, r.text


async def test_raising_a_limit_waits_for_the_cooling_off_and_lowering_cancels_it():
    client, _uid = await long_lived_user("lim")
    t = now_ms()
    assert (await patch_me(client, t, daily_deposit_limit_cents=1000)).status == 200
    r = await patch_me(client, t + 1, daily_deposit_limit_cents=5000)
    assert r.status == 200, r.text
    got = r.json()["spending_limits"]
    assert got["daily_deposit_limit_cents"] == 1000
    pending = got["pending"]["daily_deposit_limit_cents"]
    assert pending["value"] == 5000 and pending["effective_at"]
    assert (await deposit(client, 800, t + 12 * HOUR_MS)).status == 201
    r = await deposit(client, 800, t + DAY_MS - 1000)
    assert r.status == 422 and r.json()["limit_cents"] == 1000, r.text
    r = await client.get("/v1/me", headers=at(t + DAY_MS + 1000))
    assert r.json()["spending_limits"]["daily_deposit_limit_cents"] == 5000
    assert r.json()["spending_limits"]["pending"]["daily_deposit_limit_cents"] is None
    r = await deposit(client, 800, t + DAY_MS + 1000)
    assert r.status == 201, r.text

    # Removing the limit is a raise too (pending, value null); lowering then cancels it at once.
    t2 = t + DAY_MS + 2000
    r = await patch_me(client, t2, daily_deposit_limit_cents=None)
    got = r.json()["spending_limits"]
    assert got["daily_deposit_limit_cents"] == 5000 and got["pending"]["daily_deposit_limit_cents"]["value"] is None
    r = await patch_me(client, t2 + 1, daily_deposit_limit_cents=4000)
    got = r.json()["spending_limits"]
    assert got["daily_deposit_limit_cents"] == 4000 and got["pending"]["daily_deposit_limit_cents"] is None


async def test_the_monthly_limit_counts_thirty_days():
    client, _uid = await long_lived_user("lim")
    t = now_ms()
    assert (await patch_me(client, t, monthly_deposit_limit_cents=3000)).status == 200
    for day in range(3):
        r = await deposit(client, 1000, t + 1 + day * DAY_MS)
        assert r.status == 201, r.text
    r = await deposit(client, 1000, t + 1 + 3 * DAY_MS)
    assert r.status == 422, r.text
    assert r.json()["window"] == "monthly" and r.json()["remaining_cents"] == 0


async def test_self_exclusion_refuses_readings_and_deposits_and_ends_only_after_the_cooling_off():
    client, _cid, _advisor, advisor_id = await market_pair(funds=10_000)
    t = now_ms()
    r = await patch_me(client, t, self_exclusion_days=7)
    assert r.status == 200, r.text
    assert r.json()["spending_limits"]["self_excluded_until"] is not None
    before = await row_counts()
    r = await request_reading(client, advisor_id, t + 1)
    assert r.status == 403 and r.json()["code"] == "self_excluded", r.text
    r = await deposit(client, 1000, t + 1)
    assert r.status == 403 and r.json()["code"] == "self_excluded", r.text
    assert await row_counts() == before

    # Ending it early (0 days) waits 24 h.
    r = await patch_me(client, t + 2, self_exclusion_days=0)
    got = r.json()["spending_limits"]
    assert got["self_excluded_until"] is not None and got["pending"]["self_excluded_until"]["value"] is None
    r = await request_reading(client, advisor_id, t + DAY_MS - 1000)
    assert r.status == 403, r.text
    r = await request_reading(client, advisor_id, t + DAY_MS + 1000)
    assert r.status == 201, r.text


async def test_extending_self_exclusion_is_immediate_shortening_is_not():
    client, _uid = await long_lived_user("lim")
    t = now_ms()
    r = await patch_me(client, t, self_exclusion_days=2)
    first = r.json()["spending_limits"]["self_excluded_until"]
    r = await patch_me(client, t + 1, self_exclusion_days=5)
    longer = r.json()["spending_limits"]
    assert longer["self_excluded_until"] > first and longer["pending"]["self_excluded_until"] is None
    r = await patch_me(client, t + 2, self_exclusion_days=1)
    shorter = r.json()["spending_limits"]
    assert shorter["self_excluded_until"] == longer["self_excluded_until"]
    assert shorter["pending"]["self_excluded_until"]["value"] is not None


async def test_concurrent_deposits_cannot_pass_the_limit_together():
    client, uid = await long_lived_user("limc")
    t = now_ms()
    assert (await patch_me(client, t, daily_deposit_limit_cents=3000)).status == 200
    responses = await asyncio.gather(*(deposit(client, 1000, t + 1 + i) for i in range(10)))
    statuses = sorted(r.status for r in responses)
    assert statuses == [201] * 3 + [422] * 7, [(r.status, r.text[:120]) for r in responses]
    assert all(r.json()["code"] == "deposit_limit_exceeded" for r in responses if r.status == 422)
    row = await database().first(
        sql("SELECT count(*) AS n, sum(amount_cents) AS total FROM payments WHERE user_id = ?", uid)
    )
    assert row["n"] == 3 and row["total"] == 3000


async def test_the_limits_are_triggers_on_the_inserts_themselves():
    """Written behind the handlers' backs, a payment claim past the limit and a reading
    request of a self-excluded client are refused by D1 itself."""
    client, uid, _advisor, advisor_id = await market_pair(funds=10_000)
    t = now_ms()
    assert (await patch_me(client, t, daily_deposit_limit_cents=500)).status == 200
    claim = "INSERT INTO payments (id, user_id, amount_cents, status, created_at_ms, updated_at_ms) VALUES (?, ?, ?, 'pending', ?, ?)"
    try:
        await database().run(sql(claim, new_id(), uid, 600, t + 1, t + 1))
        raise AssertionError("the claim past the limit was written")
    except TriggerAbort as exc:
        assert exc.code == "deposit_limit_daily"
    assert (await patch_me(client, t + 2, self_exclusion_days=1)).status == 200
    try:
        await database().run(
            sql(
                "INSERT INTO readings (id, client_id, advisor_id, channel, status, rate_cents_per_minute, "
                "advisor_cents_per_minute, platform_cents_per_minute, billing_period_seconds, requested_at_ms) "
                "VALUES (?, ?, ?, 'chat', 'requested', 100, 80, 20, 60, ?)",
                new_id(),
                uid,
                advisor_id,
                t + 3,
            )
        )
        raise AssertionError("a self-excluded client's reading was written")
    except TriggerAbort as exc:
        assert exc.code == "self_excluded"


async def test_the_window_sum_reads_only_counted_deposits_through_the_index():
    from clairvora import limits

    plan = await database().all(sql("EXPLAIN QUERY PLAN " + limits.WINDOW_SUM, 1, 0))
    details = " ".join(str(r["detail"]) for r in plan.rows)
    assert "payments_counted_by_user_time" in details, details


async def test_the_cooling_off_is_a_trigger_too():
    """An UPDATE that raises a limit, removes it or ends self-exclusion at once is refused by D1;
    lowering and extending pass."""
    client, uid = await long_lived_user("limt")
    t = now_ms()
    assert (await patch_me(client, t, daily_deposit_limit_cents=1000, self_exclusion_days=3)).status == 200
    db = database()
    for statement in (
        "UPDATE users SET daily_deposit_limit_cents = 2000, updated_at_ms = ? WHERE id = ?",
        "UPDATE users SET daily_deposit_limit_cents = NULL, updated_at_ms = ? WHERE id = ?",
        "UPDATE users SET monthly_deposit_limit_cents = 10, updated_at_ms = ? WHERE id = ?",  # no limit yet: lowering
        "UPDATE users SET self_excluded_until_ms = NULL, updated_at_ms = ? WHERE id = ?",
    ):
        try:
            await db.run(sql(statement, t + 1, uid))
            assert "monthly" in statement, f"not refused: {statement}"
        except TriggerAbort as exc:
            assert exc.code == "limit_cooling_off" and "monthly" not in statement, statement
    await db.run(sql("UPDATE users SET daily_deposit_limit_cents = 10, updated_at_ms = ? WHERE id = ?", t + 2, uid))
    await db.run(
        sql("UPDATE users SET self_excluded_until_ms = ?, updated_at_ms = ? WHERE id = ?", t + 9 * DAY_MS, t + 2, uid)
    )
