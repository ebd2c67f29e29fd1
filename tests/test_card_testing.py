"""Card-testing defence (issue 13 item 8): declined or errored deposits count per
user and per client IP; past the threshold new deposits are refused for a
cool-off, 429 `deposit_cooloff` with Retry-After, enforced in the claim batch
(nothing written, the gateway never called), visible in the ledger check.
Defaults: 5 failures per user or 10 per IP within 3600 s -> 3600 s cool-off."""

import json
import secrets
import time

import local_runtime

from clairvora.db import sql
from clairvora.ids import new_id
from money_support import balance
from support import Client, database, new_user, token_for, unique

USER_LIMIT = 5
IP_LIMIT = 10
HOUR_MS = 3600 * 1000


def deposit_body(token: str, amount: int = 1000) -> dict:
    return {
        "amount_cents": amount,
        "opaque_data": {"data_descriptor": "COMMON.ACCEPT.INAPP.PAYMENT", "data_value": token},
    }


def new_ip() -> str:
    """An IPv6 address in a /64 of its own (the limit counts an IPv6 client by its /64)."""
    return f"2001:db8:{secrets.randbelow(0xFFFF):x}:{secrets.randbelow(0xFFFF):x}::{secrets.randbelow(0xFFFF):x}"


async def deposit(client: Client, token: str, ip: str, now_ms: int) -> object:
    return await client.post(
        "/v1/wallet/deposits",
        deposit_body(token),
        headers={"idempotency-key": unique(), "cf-connecting-ip": ip, "x-test-now-ms": str(now_ms)},
    )


def received(invoice: str) -> list[dict]:
    return json.loads(str(local_runtime.anetControl.received(invoice)))


async def user_with_wallet(prefix: str) -> tuple[int, Client]:
    """A fresh user whose token outlives the hours these tests move the clock."""
    sub, client = await new_user(prefix)
    client.token = await token_for(sub, exp=int(time.time()) + 3 * 3600)
    me = (await client.get("/v1/me")).json()
    return int(me["id"]), client


async def payments_of(user_id: int) -> int:
    row = await database().first(sql("SELECT count(*) AS n FROM payments WHERE user_id = ?", user_id))
    assert row is not None
    return int(row["n"])


async def test_declines_and_errors_of_one_user_start_a_cooloff_then_it_ends():
    user_id, client = await user_with_wallet("ct")
    now = int(time.time() * 1000)
    # Declined and errored both count, from any address.
    for i, token in enumerate(["tok_declined", "tok_error", "tok_declined", "tok_error", "tok_declined"]):
        resp = await deposit(client, token, new_ip(), now + i)
        assert resp.status in (402, 502), resp.text
    before = await payments_of(user_id)

    refused = await deposit(client, "tok_approved", new_ip(), now + 10)
    assert refused.status == 429, refused.text
    problem = refused.json()
    assert problem["code"] == "deposit_cooloff" and refused.headers["content-type"] == "application/problem+json"
    retry_after = int(refused.headers["retry-after"])
    assert 3500 <= retry_after <= 3600 and problem["retry_after_s"] == retry_after
    assert await payments_of(user_id) == before  # nothing written, the gateway never called
    assert await balance(user_id) == 0

    # Still refused just before the cool-off ends, accepted after it.
    late = await deposit(client, "tok_approved", new_ip(), now + 4 + HOUR_MS - 1000)
    assert late.status == 429 and late.json()["code"] == "deposit_cooloff"
    assert int(late.headers["retry-after"]) <= 2
    after = await deposit(client, "tok_approved", new_ip(), now + 5 + HOUR_MS)
    assert after.status == 201, after.text
    assert await balance(user_id) == 1000


async def test_approved_and_held_deposits_do_not_count():
    _user_id, client = await user_with_wallet("ct")
    now = int(time.time() * 1000)
    ip = new_ip()
    for i in range(USER_LIMIT + 1):
        assert (await deposit(client, "tok_approved", ip, now + i)).status == 201
    assert (await deposit(client, "tok_held", ip, now + 20)).status == 202
    for i in range(USER_LIMIT - 1):
        assert (await deposit(client, "tok_declined", ip, now + 30 + i)).status == 402
    assert (await deposit(client, "tok_approved", ip, now + 40)).status == 201


async def test_failures_from_one_address_cool_it_off_for_every_user():
    ip = new_ip()
    now = int(time.time() * 1000)
    for i in range(IP_LIMIT // 2):
        _user_id, client = await user_with_wallet("ctip")
        assert (await deposit(client, "tok_declined", ip, now + 2 * i)).status == 402
        assert (await deposit(client, "tok_error", ip, now + 2 * i + 1)).status == 502
    fresh_id, fresh = await user_with_wallet("ctip")
    refused = await deposit(fresh, "tok_approved", ip, now + 50)
    assert refused.status == 429 and refused.json()["code"] == "deposit_cooloff", refused.text
    assert 3500 <= int(refused.headers["retry-after"]) <= 3600
    assert await payments_of(fresh_id) == 0
    # The same address's /64, another host in it: refused too. Another address: accepted.
    same_64 = ip.rsplit("::", 1)[0] + "::beef"
    assert (await deposit(fresh, "tok_approved", same_64, now + 51)).status == 429
    assert (await deposit(fresh, "tok_approved", new_ip(), now + 52)).status == 201


async def test_deposits_in_flight_count_against_the_budget():
    """Concurrent attempts cannot pass the threshold together: an attempt whose
    gateway answer is not recorded yet counts as a failure until it is."""
    user_id, client = await user_with_wallet("ct")
    now = int(time.time() * 1000)
    for i in range(USER_LIMIT - 1):
        assert (await deposit(client, "tok_declined", new_ip(), now + i)).status == 402
    # A claim of this user still in flight (its request has not settled yet).
    payment_id = new_id()
    db = database()
    await db.batch(
        [
            sql(
                "INSERT INTO payments (id, user_id, amount_cents, status, created_at_ms, updated_at_ms)"
                " VALUES (?, ?, 1000, 'pending', ?, ?)",
                payment_id,
                user_id,
                now + 10,
                now + 10,
            ),
            sql(
                "INSERT INTO deposit_attempts (payment_id, user_id, client_ip, state, created_at_ms)"
                " VALUES (?, ?, NULL, 'in_flight', ?)",
                payment_id,
                user_id,
                now + 10,
            ),
        ]
    )
    refused = await deposit(client, "tok_approved", new_ip(), now + 11)
    assert refused.status == 429 and refused.json()["code"] == "deposit_cooloff", refused.text


async def test_the_ledger_check_lists_active_cooloffs():
    user_id, client = await user_with_wallet("ct")
    ip = new_ip()
    now = int(time.time() * 1000)
    for i in range(USER_LIMIT):
        assert (await deposit(client, "tok_declined", ip, now + i)).status == 402
    admin_id, admin = await user_with_wallet("ctadmin")
    await database().run(sql("UPDATE users SET is_admin = 1 WHERE id = ?", admin_id))
    report = (await admin.get("/v1/admin/ledger/check", headers={"x-test-now-ms": str(now + 100)})).json()
    cooloffs = report["deposit_cooloffs"]
    mine = [c for c in cooloffs["items"] if c["scope"] == "user" and c["subject"] == str(user_id)]
    assert cooloffs["active_count"] >= 1 and len(mine) == 1, cooloffs
    assert mine[0]["failures"] == USER_LIMIT and mine[0]["until"] > mine[0]["started_at"]
    assert report["ok"] is True  # a cool-off is no ledger violation
    # After it ends, it is no longer listed.
    later = (await admin.get("/v1/admin/ledger/check", headers={"x-test-now-ms": str(now + 2 * HOUR_MS)})).json()
    assert not [c for c in later["deposit_cooloffs"]["items"] if c["subject"] == str(user_id)]
