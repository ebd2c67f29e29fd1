"""Helpers for the promo tests: codes made and redeemed through the API, the
promo state read from D1, and the expiry sweep run like the cron runs it."""

import json
from typing import Any

from clairvora import promo, reconcile
from clairvora.clock import rfc3339
from clairvora.db import sql
from market_support import at, fetch_with_env, now_ms
from support import Client, database, unique

DAY_MS = 86_400_000


async def admin() -> Client:
    """An admin whose token outlives the days a test moves the clock."""
    from market_support import long_lived_user

    client, user_id = await long_lived_user("padm")
    await database().run(sql("UPDATE users SET is_admin = 1 WHERE id = ?", user_id))
    return client


async def create_code(admin_client: Client, t: int | None = None, **fields: Any) -> dict[str, Any]:
    t = now_ms() if t is None else t
    body = {
        "code": unique("PC").upper()[:32],
        "valid_until": rfc3339(t + 30 * DAY_MS),
        "max_redemptions": 100,
        **fields,
    }
    if "credit_cents" not in body and "free_minutes" not in body:
        body["credit_cents"] = 500
    r = await admin_client.post("/v1/admin/promo-codes", body, headers=at(t, **{"idempotency-key": unique("ck")}))
    assert r.status == 201, r.text
    return r.json()


async def redeem(client: Client, code: str, t: int | None = None, key: str | None = None) -> Any:
    t = now_ms() if t is None else t
    return await client.post(
        "/v1/promo-codes/redeem", {"code": code}, headers=at(t, **{"idempotency-key": key or unique("rk")})
    )


async def give_credit(admin_client: Client, client: Client, cents: int, t: int, valid_days: int = 30) -> None:
    """`cents` of promo credit for the client, granted at `t` (a code of its own)."""
    code = await create_code(admin_client, t, credit_cents=cents, credit_valid_days=valid_days, max_redemptions=1)
    r = await redeem(client, code["code"], t)
    assert r.status == 201, r.text


async def promo_balance(user_id: int) -> int:
    row = await database().first(
        sql("SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'client_promo'", user_id)
    )
    return 0 if row is None else int(row["balance_cents"])


async def account(account_id: int) -> int:
    row = await database().first(sql("SELECT balance_cents FROM accounts WHERE id = ?", account_id))
    return int(row["balance_cents"])


async def grants(user_id: int) -> list[dict[str, Any]]:
    result = await database().all(
        sql("SELECT * FROM promo_grants WHERE client_id = ? ORDER BY granted_at_ms, expires_at_ms, id", user_id)
    )
    return [dict(r) for r in result.rows]


async def charges(reading_id: Any) -> list[dict[str, Any]]:
    result = await database().all(
        sql(
            "SELECT minute, amount_cents, promo_cents FROM reading_charges WHERE reading_id = ? ORDER BY minute",
            int(reading_id),
        )
    )
    return [dict(r) for r in result.rows]


async def legs_of_minute(reading_id: Any, minute: int) -> dict[str, int]:
    """{account kind (platform accounts by id): amount} of one minute's transfer."""
    result = await database().all(
        sql(
            """SELECT CASE WHEN a.owner_user_id IS NULL THEN 'account_' || a.id ELSE a.kind END AS k, e.amount_cents
               FROM reading_charges c JOIN ledger_entries e ON e.transfer_id = c.transfer_id
               JOIN accounts a ON a.id = e.account_id WHERE c.reading_id = ? AND c.minute = ?""",
            int(reading_id),
            minute,
        )
    )
    return {r["k"]: int(r["amount_cents"]) for r in result.rows}


async def sweep(time_ms: int, runs: int = 50) -> int:
    """The cron's promo expiry at `time_ms` until nothing is due (earlier tests
    may have left expired grants); returns the grants expired."""
    db, total = database(), 0
    for _ in range(runs):
        done = await promo.expire_credit(db, time_ms, call_budget=10_000)
        total += done["promo_grants_expired"]
        if done["promo_grants_expired"] == 0:
            return total
    raise AssertionError("the promo sweep did not finish")


async def check_named(name: str, now: int | None = None) -> dict[str, Any]:
    report = await reconcile.check(database(), now)
    return next(c for c in report["checks"] if c["name"] == name)


async def assert_books_ok(now: int | None = None) -> None:
    report = await reconcile.check(database(), now)
    assert report["ok"], json.dumps([c for c in report["checks"] if not c["ok"]])


async def env_post(
    client: Client, path: str, env: dict[str, str], body: Any = None, headers: dict[str, str] | None = None
) -> Any:
    """A POST with some Worker vars changed for it (e.g. NEW_CLIENT_FREE_MINUTES)."""
    assert client.token is not None
    return await fetch_with_env(env, "POST", path, token=client.token, json_body=body, headers=headers)
