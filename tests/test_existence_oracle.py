"""No existence oracle: someone else's object and a missing one answer
identically, status, headers and body, on every route that looks an object up
for its caller (readings and everything under them, the public advisor routes
given a user who is no advisor, a reading requested from such a user, the
admin-only refund asked by a non-admin, an Idempotency-Key another user holds).

Left out of the comparison: `x-request-id` only (random per request, or the
edge's cf-ray). `x-d1-bookmark` is compared by how far it moved: the primary's
commit position advances with every request that starts at the primary (a
counter everyone's requests move, whatever exists), so each comparison sends
the missing id, then the foreign one, then the missing one again, at one
injected clock, and the foreign answer's bookmark must sit exactly one step
between the two missing ones. Everything else, `server-timing` (D1 calls and
rows read/written) included, must be byte for byte the same.

The mechanism (app._response_headers): a 404 reports its D1 calls (a scoped
miss takes the same path whoever's row it would have been) but withholds its
row counts (written as 0) and durations, which do depend on whether a row was
met and filtered out by the caller's scope."""

import json
from typing import Any

import pytest

from clairvora.app import ROUTES
from clairvora.ids import new_id
from market_support import at, market_pair, now_ms, request_reading
from support import Client, Resp, unique
from world import actor, credit, ended_reading, make_admin, make_advisor, row_counts

RANDOM_HEADERS = frozenset({"x-request-id"})

READING_ROUTES = sorted(
    (r.method, r.pattern) for r in ROUTES if r.pattern.startswith("/v1/readings/{reading_id:id}") and r.auth == "user"
)
# Bodies that pass each route's shape, so the lookup (not the parser) answers.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/readings/{reading_id:id}/messages"): {"body": "hello there"},
    ("POST", "/v1/readings/{reading_id:id}/review"): {"rating": 5, "comment": "Fine"},
    ("POST", "/v1/readings/{reading_id:id}/satisfaction-claim"): {"reason": "Not what I hoped"},
}
STATES = ("requested", "active", "ended")


def _bookmark_position(r: Resp) -> tuple[int, ...] | None:
    """The bookmark's fields as numbers (local D1: `00000000-00000046-00000000-<hex>`)."""
    raw = r.headers.get("x-d1-bookmark")
    if raw is None:
        return None
    return tuple(int(part, 16) for part in raw.split("-"))


def _comparable(r: Resp) -> tuple[int, dict[str, str], bytes]:
    kept = {k: v for k, v in r.headers.items() if k not in RANDOM_HEADERS and k != "x-d1-bookmark"}
    return r.status, kept, r.body


def _step(a: Resp, b: Resp) -> tuple[int, ...] | None:
    pa, pb = _bookmark_position(a), _bookmark_position(b)
    if pa is None or pb is None:
        assert pa == pb, "a bookmark on one answer only"
        return None
    return tuple(y - x for x, y in zip(pa, pb, strict=True))


async def _send(client: Client, method: str, path: str, body: Any, t_ms: int) -> Resp:
    # A key of its own for every request (routes that move money need one; none may replay another's answer).
    headers = at(t_ms, **{"idempotency-key": unique("oracle")})
    if body is None:
        return await client.request(method, path, headers=headers)
    return await client.request(method, path, json_body=body, headers=headers)


async def assert_same_answer(
    client: Client,
    method: str,
    foreign: tuple[str, Any],
    missing: tuple[str, Any],
    *,
    what: str,
) -> Resp:
    """The missing object, the foreign one, the missing one again ((path, body) each): identical answers."""
    t = now_ms()
    before = await row_counts()
    first = await _send(client, method, *missing, t)
    theirs = await _send(client, method, *foreign, t)
    again = await _send(client, method, *missing, t)
    assert await row_counts() == before, f"{what}: a refused lookup wrote"
    assert _comparable(first) == _comparable(again), (
        f"{what}: two answers for one missing object (noise, not an oracle): {first.headers} {again.headers}"
    )
    assert first.status >= 400, f"{what}: {first.status} {first.text[:200]}"
    # The primary's commit position moves with every request that starts there (anyone's,
    # found or not): the foreign answer must sit exactly between the two missing ones.
    assert _step(first, theirs) == _step(theirs, again), (
        f"{what}: the bookmark moved differently for someone else's object: "
        f"{first.headers.get('x-d1-bookmark')} {theirs.headers.get('x-d1-bookmark')} {again.headers.get('x-d1-bookmark')}"
    )
    assert _comparable(theirs) == _comparable(first), (
        f"{what}: someone else's object answers differently from a missing one:\n"
        f"foreign {theirs.status} {json.dumps(theirs.headers, sort_keys=True)} {theirs.text[:200]}\n"
        f"missing {first.status} {json.dumps(first.headers, sort_keys=True)} {first.text[:200]}"
    )
    return theirs


async def _foreign_reading(state: str) -> str:
    """A reading between two strangers, taken through the API to `state`."""
    client, _cid, advisor, advisor_id = await market_pair(funds=10_000)
    t = now_ms()
    r = await request_reading(client, advisor_id, t)
    assert r.status == 201, r.text
    reading_id = r.json()["id"]
    if state in ("active", "ended"):
        r = await advisor.post(f"/v1/readings/{reading_id}/accept", headers=at(t + 1))
        assert r.status == 200, r.text
    if state == "ended":
        r = await client.post(f"/v1/readings/{reading_id}/end", headers=at(t + 2))
        assert r.status == 200, r.text
    return reading_id


_cache: dict[str, Any] = {}


async def strangers() -> dict[str, Any]:
    """Callers with objects of their own (so their lookups have rows to find), and foreign readings."""
    if "world" not in _cache:
        caller_client = await actor("orc")
        await credit(caller_client.id, 100_000)
        caller_advisor = await make_advisor(await actor("ora"))
        # Each caller has a reading of its own too (an ended one between the two).
        t = now_ms()
        r = await request_reading(caller_client.client, caller_advisor.id, t)
        assert r.status == 201, r.text
        own = r.json()["id"]
        r = await caller_advisor.client.post(f"/v1/readings/{own}/accept", headers=at(t + 1))
        assert r.status == 200, r.text
        r = await caller_client.client.post(f"/v1/readings/{own}/end", headers=at(t + 2))
        assert r.status == 200, r.text
        foreign = {state: await _foreign_reading(state) for state in STATES}
        _cache["world"] = {"callers": {"client": caller_client, "advisor": caller_advisor}, "readings": foreign}
    return _cache["world"]


def test_the_reading_routes_are_all_here():
    """A new route under /v1/readings/{id} is compared as soon as it exists (a body if it needs one)."""
    assert len(READING_ROUTES) >= 9, READING_ROUTES
    for method, pattern in READING_ROUTES:
        route = next(r for r in ROUTES if (r.method, r.pattern) == (method, pattern))
        assert route.body is None or (method, pattern) in BODIES, f"{method} {pattern}: add a valid body to BODIES"


@pytest.mark.parametrize(("method", "pattern"), READING_ROUTES, ids=[f"{m} {p}" for m, p in READING_ROUTES])
async def test_a_foreign_reading_answers_like_a_missing_one(method, pattern):
    world = await strangers()
    body = BODIES.get((method, pattern))
    for role, caller in world["callers"].items():
        for state, reading_id in world["readings"].items():
            r = await assert_same_answer(
                caller.client,
                method,
                (pattern.replace("{reading_id:id}", reading_id), body),
                (pattern.replace("{reading_id:id}", str(new_id())), body),
                what=f"{method} {pattern} as a stranger {role}, {state} reading",
            )
            assert r.status == 404 and r.json()["code"] == "not_found", r.text
            assert r.headers["server-timing"].endswith(' rows_read=0 rows_written=0"'), r.headers


async def test_with_durations_on_a_404_withholds_them_too():
    """SERVER_TIMING=timing adds durations, which a found-then-filtered row lengthens: none on a 404."""
    from dispatch import fetch_with_vars

    world = await strangers()
    caller = world["callers"]["client"]
    auth = {"authorization": f"Bearer {caller.token}"}
    answers = [
        await fetch_with_vars(f"/v1/readings/{reading_id}", headers=auth, SERVER_TIMING="timing")
        for reading_id in (world["readings"]["active"], str(new_id()))
    ]
    for r in answers:
        assert r.status == 404 and r.headers["server-timing"] == 'd1;desc="calls=1 rows_read=0 rows_written=0"', (
            r.headers
        )
    own = (await caller.client.get("/v1/readings")).json()["items"][0]["id"]
    r = await fetch_with_vars(f"/v1/readings/{own}", headers=auth, SERVER_TIMING="timing")
    assert r.status == 200 and "py;dur=" in r.headers["server-timing"], r.headers


async def test_found_objects_keep_their_d1_figures():
    """What the bench reads: an answer that found its object still reports its D1 cost."""
    world = await strangers()
    caller = world["callers"]["client"]
    r = await caller.client.get("/v1/readings")
    assert r.status == 200 and r.json()["items"], r.text
    r = await caller.client.get(f"/v1/readings/{r.json()['items'][0]['id']}")
    assert r.status == 200 and "rows_read=" in r.headers["server-timing"], r.headers


async def test_public_advisor_routes_do_not_tell_a_user_from_nobody():
    """An id that is a user but no advisor answers like an id nobody has."""
    client_only = (await strangers())["callers"]["client"]
    for suffix in ("", "/reviews", "/photo"):
        r = await assert_same_answer(
            Client(),
            "GET",
            (f"/v1/advisors/{client_only.id}{suffix}", None),
            (f"/v1/advisors/{new_id()}{suffix}", None),
            what=f"GET /v1/advisors/{{id}}{suffix}",
        )
        assert r.status == 404, r.text


async def test_requesting_a_reading_from_a_user_who_is_no_advisor():
    caller = (await strangers())["callers"]["client"]
    someone = await actor("orn")  # a user, not an advisor
    r = await assert_same_answer(
        caller.client,
        "POST",
        ("/v1/readings", {"advisor_id": str(someone.id), "channel": "chat"}),
        ("/v1/readings", {"advisor_id": str(new_id()), "channel": "chat"}),
        what="POST /v1/readings naming a user who is no advisor",
    )
    assert r.status == 404, r.text


async def test_the_admin_refund_route_tells_a_non_admin_nothing():
    world = await strangers()
    body = {"amount_cents": 50, "reason": "probe"}
    r = await assert_same_answer(
        world["callers"]["client"].client,
        "POST",
        (f"/v1/admin/readings/{world['readings']['ended']}/refund", body),
        (f"/v1/admin/readings/{new_id()}/refund", body),
        what="POST /v1/admin/readings/{id}/refund as a non-admin",
    )
    assert r.status == 403, r.text


async def test_the_admin_promo_routes_tell_a_non_admin_nothing():
    """Their first read goes with the caller lookup and is gated on the admin's users
    row, so a non-admin's 403 reads the same rows whether the object exists or not
    (ungated, the reading's sums read 10 rows against 4; a code's primary-key seek
    counts alike found or not, the gate is there all the same)."""
    from promo_support import admin, create_code

    world = await strangers()
    caller = world["callers"]["client"].client
    code = await create_code(await admin())
    grant = {"amount_cents": 1, "reason": "probe"}
    for what, foreign, missing in (
        (
            "POST /v1/admin/readings/{id}/satisfaction-credit",
            (f"/v1/admin/readings/{world['readings']['ended']}/satisfaction-credit", grant),
            (f"/v1/admin/readings/{new_id()}/satisfaction-credit", grant),
        ),
        (
            "POST /v1/admin/promo-codes/{id}/disable",
            (f"/v1/admin/promo-codes/{code['id']}/disable", None),
            (f"/v1/admin/promo-codes/{new_id()}/disable", None),
        ),
    ):
        r = await assert_same_answer(caller, "POST", foreign, missing, what=f"{what} as a non-admin")
        assert r.status == 403, r.text


async def test_the_chargeback_routes_tell_a_non_admin_nothing():
    """Their reads travel with the caller lookup gated on the admin role (chargebacks.py):
    a non-admin's 403 reads the same rows whether the deposit or chargeback exists,
    the clawback side's shares read included."""
    from card_support import deposit
    from test_chargebacks import post_with_vars, record

    world = await strangers()
    caller = world["callers"]["client"]
    owner = await actor("orcb")
    dep = await deposit(owner.client, 1000)
    await ended_reading(owner.id, world["callers"]["advisor"].id, minutes=3)  # spent: an admin would read shares
    recorded = await record(dep, {"amount_cents": 100})
    assert recorded.status == 201, recorded.text
    cb_id = recorded.json()["chargeback"]["id"]
    r = await assert_same_answer(
        caller.client,
        "POST",
        (f"/v1/admin/payments/{dep['id']}/chargebacks", {"note": "probe"}),
        (f"/v1/admin/payments/{new_id()}/chargebacks", {"note": "probe"}),
        what="POST /v1/admin/payments/{id}/chargebacks as a non-admin",
    )
    assert r.status == 403, r.text
    r = await assert_same_answer(
        caller.client,
        "POST",
        (f"/v1/admin/chargebacks/{cb_id}/resolve", {"outcome": "won", "note": "probe"}),
        (f"/v1/admin/chargebacks/{new_id()}/resolve", {"outcome": "won", "note": "probe"}),
        what="POST /v1/admin/chargebacks/{id}/resolve as a non-admin",
    )
    assert r.status == 403, r.text
    # Under CHARGEBACK_ADVISOR_SIDE=clawback the batch also reads the advisors' shares.
    answers = [
        await post_with_vars(
            caller, f"/v1/admin/payments/{pid}/chargebacks", {"note": "probe"}, CHARGEBACK_ADVISOR_SIDE="clawback"
        )
        for pid in (dep["id"], str(new_id()))
    ]
    assert [a.status for a in answers] == [403, 403], [a.text for a in answers]
    assert answers[0].body == answers[1].body
    assert answers[0].headers["server-timing"] == answers[1].headers["server-timing"], [a.headers for a in answers]
    resolved = await post_with_vars(
        await _admin_actor(), f"/v1/admin/chargebacks/{cb_id}/resolve", {"outcome": "lost", "note": "done"}
    )
    assert resolved.status == 200, resolved.text  # lift the hold


async def _admin_actor() -> Any:
    from test_chargebacks import _admin

    return await _admin()


async def test_an_admin_refund_of_a_missing_reading_is_a_plain_not_found():
    """Admins may refund any reading: a missing one is 404 (no other party's object to hide here)."""
    admin = await make_admin(await actor("orad"))
    r = await _send(
        admin.client, "POST", f"/v1/admin/readings/{new_id()}/refund", {"amount_cents": 1, "reason": "x"}, now_ms()
    )
    assert r.status == 404 and r.json()["code"] == "not_found", r.text


async def test_another_users_idempotency_key_is_no_oracle():
    """Keys are scoped per user: a key someone else used answers like a fresh one
    (same status, same D1 counts), and replays nothing of theirs."""
    first, second, third = await actor("oik1"), await actor("oik2"), await actor("oik3")
    key = unique("shared")

    def deposit(token: str) -> dict[str, Any]:
        return {
            "amount_cents": 1000,
            "opaque_data": {"data_descriptor": "COMMON.ACCEPT.INAPP.PAYMENT", "data_value": f"tok_approved.{token}"},
        }

    r = await first.client.post("/v1/wallet/deposits", json=deposit(unique("a")), headers={"idempotency-key": key})
    assert r.status == 201, r.text
    used = await second.client.post("/v1/wallet/deposits", json=deposit(unique("b")), headers={"idempotency-key": key})
    # The fresh key from a caller at the same point (a first deposit): a deposit's
    # card-testing guard reads the caller's own earlier attempts (deposit_attempts.py).
    fresh = await third.client.post(
        "/v1/wallet/deposits", json=deposit(unique("c")), headers={"idempotency-key": unique("fresh")}
    )
    assert used.status == fresh.status == 201, (used.text, fresh.text)
    assert used.json()["deposit"]["id"] != r.json()["deposit"]["id"]
    assert used.headers.get("server-timing") == fresh.headers.get("server-timing")
    assert sorted(used.headers) == sorted(fresh.headers)
