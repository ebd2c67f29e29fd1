"""Injected D1 faults at every call position of the promo money routes (the
method of test_fault_injection.py): call k of N fails before or after it ran;
the answer is a retryable 503 (or the route absorbed it), nothing is
half-written, the retry with the same key (or the same request, for accept and
heartbeat) succeeds and the effect is there exactly once, and the books,
promo invariants included, are clean."""

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from clairvora.db import sql
from market_support import MINUTE_MS, active_reading, market_pair, now_ms, request_reading
from promo_support import admin, assert_books_ok, create_code, give_credit, redeem
from support import database, unique
from test_fault_injection import Attempt, post, send
from world import actor, make_admin

_positions: list[str] = []


async def _promo_state(user_id: int) -> tuple[Any, ...]:
    row = await database().first(
        sql(
            """SELECT (SELECT balance_cents FROM accounts WHERE owner_user_id = ?1 AND kind = 'client_promo') AS promo,
                      (SELECT count(*) FROM promo_grants WHERE client_id = ?1) AS grants,
                      (SELECT count(*) FROM promo_redemptions WHERE client_id = ?1) AS redemptions,
                      (SELECT count(*) FROM free_minute_offers WHERE client_id = ?1) AS offers,
                      (SELECT count(*) FROM satisfaction_claims WHERE client_id = ?1) AS claims,
                      (SELECT balance_cents FROM accounts WHERE owner_user_id = ?1 AND kind = 'client_wallet') AS wallet""",
            user_id,
        )
    )
    return tuple(row[k] for k in ("promo", "grants", "redemptions", "offers", "claims", "wallet"))


async def _admin_token() -> str:
    return (await make_admin(await actor("fpadm"))).token


async def redeem_credit_attempt() -> Attempt:
    code = await create_code(await admin(), credit_cents=500)
    client = await actor("fpr")
    return Attempt(
        "/v1/promo-codes/redeem",
        {"code": code["code"]},
        unique("fk"),
        client.token,
        lambda: _promo_state(client.id),
        (500, 1, 1, 0, 0, 0),
    )


async def redeem_minutes_attempt() -> Attempt:
    code = await create_code(await admin(), free_minutes=2)
    client = await actor("fpm")
    return Attempt(
        "/v1/promo-codes/redeem",
        {"code": code["code"]},
        unique("fk"),
        client.token,
        lambda: _promo_state(client.id),
        (None, 0, 1, 1, 0, 0),
    )


async def create_code_attempt() -> Attempt:
    from clairvora.clock import rfc3339

    code = unique("FC").upper()[:32]

    async def effect() -> Any:
        row = await database().first(sql("SELECT count(*) AS n FROM promo_codes WHERE code = ?", code))
        return row["n"]

    body = {"code": code, "credit_cents": 100, "valid_until": rfc3339(now_ms() + 86_400_000), "max_redemptions": 5}
    return Attempt("/v1/admin/promo-codes", body, unique("fk"), await _admin_token(), effect, 1)


async def disable_code_attempt() -> Attempt:
    code = await create_code(await admin())

    async def effect() -> Any:
        row = await database().first(
            sql("SELECT disabled_at_ms IS NOT NULL AS d FROM promo_codes WHERE id = ?", int(code["id"]))
        )
        return row["d"]

    return Attempt(f"/v1/admin/promo-codes/{code['id']}/disable", {}, unique("fk"), await _admin_token(), effect, 1)


async def _ended_paid_reading() -> tuple[Any, int, str]:
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    reading = await active_reading(client, advisor, advisor_id, t)
    r = await client.post(f"/v1/readings/{reading['id']}/end", headers={"x-test-now-ms": str(t + 1000)})
    assert r.status == 200, r.text
    return client, client_id, reading["id"]


async def claim_attempt() -> Attempt:
    client, client_id, rid = await _ended_paid_reading()
    return Attempt(
        f"/v1/readings/{rid}/satisfaction-claim",
        {"reason": "fault test"},
        unique("fk"),
        client.token,
        lambda: _promo_state(client_id),
        (100, 1, 0, 0, 1, 900),
    )


async def admin_credit_attempt() -> Attempt:
    _client, client_id, rid = await _ended_paid_reading()
    return Attempt(
        f"/v1/admin/readings/{rid}/satisfaction-credit",
        {"amount_cents": 60, "reason": "fault test"},
        unique("fk"),
        await _admin_token(),
        lambda: _promo_state(client_id),
        (60, 1, 0, 0, 1, 900),
    )


async def promo_refund_attempt() -> Attempt:
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    await give_credit(await admin(), client, 100, t)
    reading = await active_reading(client, advisor, advisor_id, t)  # minute 1: promo
    await client.post(f"/v1/readings/{reading['id']}/end", headers={"x-test-now-ms": str(t + 1000)})
    return Attempt(
        f"/v1/admin/readings/{reading['id']}/refund",
        {"amount_cents": 100, "reason": "fault test"},
        unique("fk"),
        await _admin_token(),
        lambda: _promo_state(client_id),
        (100, 2, 1, 0, 0, 1000),
    )


SCENARIOS: dict[str, Callable[[], Awaitable[Attempt]]] = {
    "POST /v1/promo-codes/redeem (credit)": redeem_credit_attempt,
    "POST /v1/promo-codes/redeem (free minutes)": redeem_minutes_attempt,
    "POST /v1/admin/promo-codes": create_code_attempt,
    "POST /v1/admin/promo-codes/{id}/disable": disable_code_attempt,
    "POST /v1/readings/{id}/satisfaction-claim": claim_attempt,
    "POST /v1/admin/readings/{id}/satisfaction-credit": admin_credit_attempt,
    "POST /v1/admin/readings/{id}/refund (promo-paid)": promo_refund_attempt,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_every_call_position_of_a_promo_route_fails_cleanly_and_retries_exactly_once(name: str):
    make = SCENARIOS[name]
    clean = await make()
    status, _h, body, _injected, calls = await send(clean, "99")
    assert status in (200, 201), body
    assert await clean.effect() == clean.expected, name
    assert calls >= 2, f"{name} made {calls} D1 call(s)"
    for position in range(1, calls + 1):
        for when in ("before", "after"):
            fault = f"{position}" if when == "before" else f"{position};after"
            where = f"{name}: call {position}/{calls} failing {when} it ran"
            a = await make()
            untouched = await a.effect()
            status, headers, body, injected, _calls = await send(a, fault)
            assert injected == 1, where
            if status >= 300:
                assert status == 503 and headers.get("retry-after"), f"{where}: {status} {body}"
            state = await a.effect()
            assert state in (untouched, a.expected), f"{where}: half-written {state} (before {untouched})"
            status, _h, body, _i, _c = await send(a)
            assert status in (200, 201), f"{where}: retry answered {status} {body}"
            assert await a.effect() == a.expected, f"{where}: after the retry"
            replay_status, replay_headers, replay_body, _i, _c = await send(a)
            assert (replay_status, replay_body) == (status, body), f"{where}: second retry differs"
            assert replay_headers.get("idempotent-replayed") == "true", f"{where}: second retry was not a replay"
            assert await a.effect() == a.expected, f"{where}: the replay moved money"
            _positions.append(f"{name} #{position} {when}")
    await assert_books_ok()


# --- accept and heartbeat drawing promo credit (no key: the same request again) ---

_READING = """
SELECT r.status, r.billed_minutes,
       (SELECT count(*) FROM reading_charges WHERE reading_id = r.id) AS charges,
       (SELECT coalesce(sum(promo_cents), 0) FROM reading_charges WHERE reading_id = r.id) AS promo_paid,
       (SELECT count(*) FROM promo_grants WHERE client_id = r.client_id) AS grants,
       (SELECT balance_cents FROM accounts WHERE owner_user_id = r.client_id AND kind = 'client_promo') AS promo,
       (SELECT balance_cents FROM accounts WHERE owner_user_id = r.client_id AND kind = 'client_wallet') AS wallet
FROM readings r WHERE r.id = ?"""


async def _state(reading_id: str) -> dict[str, Any]:
    return dict(await database().first(sql(_READING, int(reading_id))))


async def accept_with_offer() -> tuple[str, dict[str, str], dict[str, Any]]:
    t = now_ms()
    client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=0)
    code = await create_code(await admin(), t, free_minutes=2)
    assert (await redeem(client, code["code"], t)).status == 201
    reading = (await request_reading(client, advisor_id, t)).json()
    headers = {"authorization": f"Bearer {advisor.token}", "x-test-now-ms": str(t + 1)}
    expected = {
        "status": "active",
        "billed_minutes": 1,
        "charges": 1,
        "promo_paid": 100,
        "grants": 1,
        "promo": 100,
        "wallet": 0,
    }
    return f"/v1/readings/{reading['id']}/accept", headers, expected


async def heartbeat_split_minute() -> tuple[str, dict[str, str], dict[str, Any]]:
    t = now_ms()
    client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=500)
    await give_credit(await admin(), client, 150, t)
    reading = await active_reading(client, advisor, advisor_id, t)  # minute 1: promo 100
    headers = {"authorization": f"Bearer {client.token}", "x-test-now-ms": str(t + MINUTE_MS)}
    expected = {
        "status": "active",
        "billed_minutes": 2,
        "charges": 2,
        "promo_paid": 150,
        "grants": 1,
        "promo": 0,
        "wallet": 450,
    }
    return f"/v1/readings/{reading['id']}/heartbeat", headers, expected


STEPS = {
    "accept with a free-minutes offer": accept_with_offer,
    "heartbeat, a minute half promo": heartbeat_split_minute,
}


@pytest.mark.parametrize("name", list(STEPS))
async def test_promo_charges_fail_cleanly_at_every_call_position(name: str):
    path, headers, expected = await STEPS[name]()
    status, _h, body, _i, calls = await post(path, headers, "", "99")
    assert status == 200, body
    assert await _state(path.split("/")[3]) == expected, name
    for position in range(1, calls + 1):
        for when in ("before", "after"):
            fault = f"{position}" if when == "before" else f"{position};after"
            where = f"{name}: call {position}/{calls} failing {when} it ran"
            path, headers, expected = await STEPS[name]()
            rid = path.split("/")[3]
            untouched = await _state(rid)
            status, _h, body, injected, _c = await post(path, headers, "", fault)
            assert injected == 1 and status == 503, f"{where}: {status} {body}"
            assert await _state(rid) in (untouched, expected), f"{where}: half-written"
            for _again in range(2):
                status, _h, body, _i, _c = await post(path, headers, "")
                assert status == 200, f"{where}: retry {status} {body}"
                assert await _state(rid) == expected, f"{where}: after the retry"
            _positions.append(f"{name} #{position} {when}")
    await assert_books_ok()


def test_promo_fault_positions_tried():
    per_route = Counter(p.split(" #")[0] for p in _positions)
    print(f"\npromo fault injection: {len(_positions)} positions tried: {json.dumps(per_route)}")
    assert set(per_route) == set(SCENARIOS) | set(STEPS), per_route
