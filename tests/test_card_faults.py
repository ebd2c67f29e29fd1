"""Injected D1 faults on the card-money routes (refunds of unused funds,
chargebacks), at every call position, before and after the call ran, as
tests/test_fault_injection.py does for the older money routes:
  - the answer is a retryable 503 (or a success the route absorbed itself);
  - nothing is half-written: each batch is all there or not at all. A refund
    is two movements apart (the reservation, then the settlement), so after a
    fault it may also stand reserved: the money in transit, the part waiting,
    the books balanced;
  - a retry with the same Idempotency-Key and body succeeds, and the effect is
    there exactly once (a second retry replays it, moving nothing);
  - every ledger invariant holds (the ledger check, card money included)."""

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from card_support import books_clean, deposit
from clairvora.db import sql
from support import database, unique
from test_fault_injection import Attempt, send
from world import actor, make_admin, make_advisor

_actors: dict[str, Any] = {}


async def _admin() -> Any:
    if "admin" not in _actors:
        _actors["admin"] = await make_admin(await actor("cfadm"))
    return _actors["admin"]


async def refund_attempt() -> tuple[Attempt, Any]:
    client = await actor("cfr")
    dep = await deposit(client.client, 1500)

    async def effect() -> Any:
        row = await database().first(
            sql(
                """SELECT (SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet') AS w,
                      (SELECT refunded_cents FROM payments WHERE id = ?) AS refunded,
                      (SELECT count(*) FROM wallet_refund_parts WHERE user_id = ? AND state = 'settled') AS settled,
                      (SELECT count(*) FROM wallet_refund_parts WHERE user_id = ?) AS parts""",
                client.id,
                int(dep["id"]),
                client.id,
                client.id,
            )
        )
        assert row is not None
        return row["w"], row["refunded"], row["settled"], row["parts"]

    attempt = Attempt("/v1/wallet/refunds", {"amount_cents": 600}, unique("fk"), client.token, effect, (900, 600, 1, 1))
    return attempt, (900, 600, 0, 1)  # reserved, in transit


async def chargeback_attempt() -> tuple[Attempt, Any]:
    client = await actor("cfc")
    advisor = await make_advisor(await actor("cfa"))
    dep = await deposit(client.client, 1000)
    from world import ended_reading

    await ended_reading(client.id, advisor.id, minutes=4)

    async def effect() -> Any:
        row = await database().first(
            sql(
                """SELECT (SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet') AS w,
                      (SELECT charged_back_cents FROM payments WHERE id = ?) AS cb,
                      (SELECT count(*) FROM chargebacks WHERE payment_id = ?) AS n""",
                client.id,
                int(dep["id"]),
                int(dep["id"]),
            )
        )
        assert row is not None
        return row["w"], row["cb"], row["n"]

    admin = await _admin()
    path = f"/v1/admin/payments/{dep['id']}/chargebacks"
    return Attempt(path, {"note": "fault test"}, unique("fk"), admin.token, effect, (-400, 1000, 1)), None


async def resolve_attempt() -> tuple[Attempt, Any]:
    client = await actor("cfv")
    dep = await deposit(client.client, 1000)
    admin = await _admin()
    r = await admin.client.post(
        f"/v1/admin/payments/{dep['id']}/chargebacks", {"note": "fault"}, headers={"idempotency-key": unique()}
    )
    assert r.status == 201, r.text
    cb_id = int(r.json()["chargeback"]["id"])

    async def effect() -> Any:
        row = await database().first(
            sql(
                """SELECT (SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet') AS w,
                      (SELECT state FROM chargebacks WHERE id = ?) AS state""",
                client.id,
                cb_id,
            )
        )
        assert row is not None
        return row["w"], row["state"]

    path = f"/v1/admin/chargebacks/{cb_id}/resolve"
    return Attempt(path, {"outcome": "won", "note": "fault"}, unique("fk"), admin.token, effect, (1000, "won")), None


# name -> (scenario, its D1 calls: every position below is failed before and after it ran).
# A refund is 3 (the caller with the read, the reservation, the settlement of every part);
# a chargeback and its resolution 2 (the admin with the read, the one batch).
SCENARIOS: dict[str, tuple[Callable[[], Awaitable[tuple[Attempt, Any]]], int]] = {
    "POST /v1/wallet/refunds": (refund_attempt, 3),
    "POST /v1/admin/payments/{id}/chargebacks": (chargeback_attempt, 2),
    "POST /v1/admin/chargebacks/{id}/resolve": (resolve_attempt, 2),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_every_call_position_fails_cleanly_and_retries_exactly_once(name: str):
    make, expected_calls = SCENARIOS[name]
    clean, _between = await make()
    status, _h, body, _injected, calls = await send(clean, "99")
    assert status in (200, 201), body
    assert await clean.effect() == clean.expected
    assert calls == expected_calls, f"{name} made {calls} D1 call(s), not {expected_calls}"
    seen = []
    for position in range(1, calls + 1):
        for when in ("before", "after"):
            fault = f"{position}" if when == "before" else f"{position};after"
            a, between = await make()
            untouched = await a.effect()
            status, headers, body, injected, _calls = await send(a, fault)
            where = f"{name}: call {position}/{calls} failing {when} it ran"
            assert injected == 1, where
            if status >= 300:
                assert status == 503 and headers.get("retry-after"), f"{where}: {status} {body}"
                assert headers["content-type"] == "application/problem+json" and body["code"], where
            state = await a.effect()
            assert state in (untouched, a.expected, between), f"{where}: half-written {state} (before {untouched})"
            await books_clean()
            status, _h, body, _i, _c = await send(a)
            assert status in (200, 201), f"{where}: retry answered {status} {body}"
            assert await a.effect() == a.expected, f"{where}: after the retry"
            replay_status, replay_headers, replay_body, _i, _c = await send(a)
            assert (replay_status, replay_body) == (status, body), f"{where}: second retry differs"
            assert replay_headers.get("idempotent-replayed") == "true", f"{where}: second retry was not a replay"
            assert await a.effect() == a.expected, f"{where}: the replay moved money"
            seen.append((position, when, state == between and between is not None))
    await books_clean()
    assert len(seen) == 2 * calls
    if _between is not None:
        # A refund that died after its reservation (the money in transit) was resumed by the retry.
        assert any(left_reserved for *_, left_reserved in seen), seen
