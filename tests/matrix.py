"""The authorization table (see tests/test_authz_matrix.py): callers, the
world of actors they are, and one row per route saying how to make the row's
object and what each caller must get. tests/test_bad_input.py reuses the rows
to reach each route's body parser as a caller who may use it."""

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from support import Client, claims_for, generate_other_private_key, sign_token, token_for
from world import Actor, actor, credit, make_admin, make_advisor

CALLERS = ("other_client", "other_advisor", "admin", "anonymous", "expired", "foreign_key", "owner")
PUBLIC = {c: 200 for c in CALLERS}


@dataclass
class World:
    owner: Actor
    owner_advisor: Actor  # the advisor of the owner's reading
    other_client: Actor
    other_advisor: Actor  # the advisor of other_client's reading, a different one
    admin: Actor


@dataclass
class Call:
    path: str
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # a non-JSON body (photo upload)
    # caller -> (a body of its own, extra headers), e.g. each caller's own signed webhook notification
    body_for: Callable[[str], tuple[Any, dict[str, str]]] | None = None
    # Text only the object's parties may see (its reading id, a message's body): no other
    # caller's answer may hold it, and the owner's successful answer must (so the check can fail).
    secrets: tuple[str, ...] = ()


Prepare = Callable[["World"], Awaitable[Call]]


@dataclass
class Row:
    method: str
    pattern: str
    prepare: Prepare
    expect: dict[str, int]  # caller -> status
    # Callers who act on their OWN data here ("me" routes, own wallet): their
    # writes are expected, so the table snapshot is not compared for them;
    # `owner_state` proves instead that the owner's object did not move.
    may_write: tuple[str, ...] = ()
    owner: str = "owner"  # which actor of the world owns the row's object
    owner_state: Callable[["World"], Awaitable[Any]] | None = None
    # The row changes roles (becoming an advisor) or leaves the owner a reading open
    # (one open reading per client): it gets a world of its own.
    fresh_world: bool = False
    # Two-party objects (readings): what the object's OTHER party gets (the reading's
    # advisor when the owner is its client, and the other way round). It goes just
    # before the owner; a refused counterpart must change nothing, like any caller.
    counterpart: int | None = None
    # The counterpart's allowed action uses the object up (ending the reading):
    # the owner then acts on a second, fresh object.
    counterpart_uses_up: bool = False


def authed(owner: int, *, other_client: int, other_advisor: int, admin: int) -> dict[str, int]:
    return {
        "owner": owner,
        "other_client": other_client,
        "other_advisor": other_advisor,
        "admin": admin,
        "anonymous": 401,
        "expired": 401,
        "foreign_key": 401,
    }


def admin_only(admin: int) -> dict[str, int]:
    """Admin routes: any signed-in non-admin is 403 (the route is no secret; objects behind it are)."""
    return authed(403, other_client=403, other_advisor=403, admin=admin)


MISSING_ID = 1 << 45  # a well-formed id no row has (ids are random 52-bit values)
ALL_SELF = ("other_client", "other_advisor", "admin", "owner")
ADVISORS_SELF = ("other_advisor", "owner")


def fixed(path: str, body: Any = None, headers: dict[str, str] | None = None) -> Prepare:
    async def prepare(_world: "World") -> Call:
        return Call(path, body, headers or {})

    return prepare


async def _me_version(client: Client, path: str) -> int:
    r = await client.get(path)
    assert r.status == 200, r.text
    return int(r.json()["version"])


async def _own_versions(world: "World") -> dict[str, str]:
    """Each actor's own `/v1/me` ETag: the shared world is reused across test files, and
    another file's rows may have moved one actor's version and not the others'."""
    return {
        name: f'"{await _me_version(getattr(world, name).client, "/v1/me")}"'
        for name in ("owner", "other_client", "other_advisor", "admin")
    }


async def _patch_me(world: "World") -> Call:
    """Each caller patches its own row, with its own If-Match."""
    versions = await _own_versions(world)
    body = {"display_name": "Matrix"}
    return Call(
        "/v1/me",
        body,
        {"if-match": versions["owner"]},
        body_for=lambda caller: (body, {"if-match": versions.get(caller, versions["owner"])}),
    )


async def _erase_me(world: "World") -> Call:
    """Each caller erases its own account (a fresh world: the row uses its actors up), with its own If-Match."""
    versions = await _own_versions(world)
    return Call(
        "/v1/me",
        headers={"if-match": versions["owner"]},
        body_for=lambda caller: (None, {"if-match": versions.get(caller, versions["owner"])}),
    )


async def _export(world: "World") -> Call:
    """The owner's words in a chat: only the owner's export holds them."""
    call = await _chat(world)
    return Call("/v1/me/export", secrets=call.secrets)


async def _own_advisor_state(world: "World") -> Any:
    r = await world.owner_advisor.client.get("/v1/advisors/me")
    return r.status, r.json().get("version"), r.json().get("photo_url")


async def _advisor_versions(world: "World") -> dict[str, str]:
    """Each advisor's own If-Match (callers without a profile send the owner's: they get 404 anyway)."""
    owner = f'"{await _me_version(world.owner_advisor.client, "/v1/advisors/me")}"'
    other = f'"{await _me_version(world.other_advisor.client, "/v1/advisors/me")}"'
    return {"other_advisor": other, "owner": owner}


async def _patch_advisor(world: "World") -> Call:
    versions = await _advisor_versions(world)
    body = {"headline": "Matrix headline"}
    return Call(
        "/v1/advisors/me",
        body,
        {"if-match": versions["owner"]},
        body_for=lambda caller: (body, {"if-match": versions.get(caller, versions["owner"])}),
    )


async def _put_photo(world: "World") -> Call:
    from photo_support import png

    versions = await _advisor_versions(world)
    image = png()
    return Call(
        "/v1/advisors/me/photo",
        headers={"if-match": versions["owner"], "content-type": "image/png"},
        raw=image,
        body_for=lambda caller: (image, {"if-match": versions.get(caller, versions["owner"])}),
    )


async def _delete_photo(world: "World") -> Call:
    versions = await _advisor_versions(world)
    return Call(
        "/v1/advisors/me/photo",
        headers={"if-match": versions["owner"]},
        body_for=lambda caller: (None, {"if-match": versions.get(caller, versions["owner"])}),
    )


async def _get_photo(world: "World") -> Call:
    from photo_support import png

    version = await _me_version(world.owner_advisor.client, "/v1/advisors/me")
    r = await world.owner_advisor.client.request(
        "PUT", "/v1/advisors/me/photo", body=png(), headers={"if-match": f'"{version}"', "content-type": "image/png"}
    )
    assert r.status == 200, r.text
    return Call(r.json()["photo_url"])


def _deposit_body() -> Any:
    from support import unique

    return {
        "amount_cents": 1000,
        "opaque_data": {"data_descriptor": "COMMON.ACCEPT.INAPP.PAYMENT", "data_value": f"tok_approved_{unique('mx')}"},
    }


async def _deposit(_world: "World") -> Call:
    from support import unique

    return Call("/v1/wallet/deposits", _deposit_body(), {"idempotency-key": unique("mxkey")})


async def _owner_wallet(world: "World") -> Any:
    return (await world.owner.client.get("/v1/wallet")).json()


async def _webhook(_world: "World") -> Call:
    import webhook_support

    def signed(_caller: str) -> tuple[Any, dict[str, str]]:
        body = webhook_support.event("net.authorize.payment.refund.created", trans_id="990000001", amount_cents=100)
        return body, {"x-anet-signature": webhook_support.sign(body), "content-type": "application/json"}

    return Call(webhook_support.PATH, body_for=signed)


async def _refund(world: "World") -> Call:
    from support import unique
    from world import ended_reading

    reading = await ended_reading(world.owner.id, world.owner_advisor.id, minutes=3)
    return Call(
        f"/v1/admin/readings/{reading['id']}/refund",
        {"amount_cents": 50, "reason": "Matrix refund"},
        {"idempotency-key": unique("mxref")},
    )


async def _wallet_refund(world: "World") -> Call:
    """The owner's wallet holds a settled card deposit; each caller asks for a refund of its own wallet."""
    from card_support import deposit
    from support import unique

    await deposit(world.owner.client, 1000)
    return Call("/v1/wallet/refunds", {"amount_cents": 500}, {"idempotency-key": unique("mxwr")})


async def _owner_refund(world: "World") -> Call:
    from card_support import deposit, refund

    await deposit(world.owner.client, 1000)
    r = await refund(world.owner.client, {"amount_cents": 300})
    assert r.status == 201, r.text
    view = r.json()["refund"]
    return Call(f"/v1/wallet/refunds/{view['id']}", secrets=(view["parts"][0]["gateway_transaction_id"],))


async def _chargeback(world: "World") -> Call:
    from card_support import deposit
    from support import unique

    dep = await deposit(world.owner.client, 1000)
    return Call(
        f"/v1/admin/payments/{dep['id']}/chargebacks",
        {"note": "Matrix chargeback"},
        {"idempotency-key": unique("mxcb")},
    )


async def _resolve_chargeback(world: "World") -> Call:
    from card_support import deposit
    from support import unique

    dep = await deposit(world.owner.client, 1000)
    r = await world.admin.client.post(
        f"/v1/admin/payments/{dep['id']}/chargebacks", {"note": "Matrix"}, headers={"idempotency-key": unique()}
    )
    assert r.status == 201, r.text
    return Call(
        f"/v1/admin/chargebacks/{r.json()['chargeback']['id']}/resolve",
        {"outcome": "lost", "note": "Matrix resolution"},
        {"idempotency-key": unique("mxcr")},
    )


# --- readings: the owner is the party allowed to act -------------------------


async def _reading_between(client: Actor, advisor: Actor, state: str) -> tuple[str, int]:
    """(id, clock) of a new reading taken through the API to `state`: requested,
    active (minute 1 charged on accept) or ended (that one paid minute). The
    matrix's calls go at the returned clock (x-test-now-ms, never a sleep)."""
    from market_support import at, now_ms, request_reading

    t = now_ms()
    r = await request_reading(client.client, advisor.id, t)
    assert r.status == 201, r.text
    reading_id = r.json()["id"]
    if state in ("active", "ended"):
        r = await advisor.client.post(f"/v1/readings/{reading_id}/accept", headers=at(t + 1))
        assert r.status == 200, r.text
    if state == "ended":
        r = await client.client.post(f"/v1/readings/{reading_id}/end", headers=at(t + 2))
        assert r.status == 200 and r.json()["billed_minutes"] == 1, r.text
    return reading_id, t + 1000


def _on_reading(state: str, action: str = "", body: Any = None) -> Prepare:
    """A call on a new reading of the world's owner with its advisor, in `state`."""

    async def prepare(world: "World") -> Call:
        from market_support import at

        reading_id, t = await _reading_between(world.owner, world.owner_advisor, state)
        return Call(f"/v1/readings/{reading_id}{action}", body, at(t), secrets=(reading_id,))

    return prepare


async def _request_reading(world: "World") -> Call:
    from market_support import at, now_ms
    from support import unique

    body = {"advisor_id": str(world.owner_advisor.id), "channel": "chat"}
    return Call("/v1/readings", body, at(now_ms(), **{"idempotency-key": unique("mxrd")}))


async def _my_readings(world: "World") -> Call:
    reading_id, _t = await _reading_between(world.owner, world.owner_advisor, "ended")
    return Call("/v1/readings", secrets=(reading_id,))


async def _chat(world: "World") -> Call:
    """An ended reading whose chat holds one message from the client."""
    from market_support import at
    from support import unique

    reading_id, t = await _reading_between(world.owner, world.owner_advisor, "active")
    text = f"private words {unique('mxmsg')}"
    r = await world.owner.client.post(f"/v1/readings/{reading_id}/messages", json={"body": text}, headers=at(t))
    assert r.status == 201, r.text
    r = await world.owner.client.post(f"/v1/readings/{reading_id}/end", headers=at(t + 1))
    assert r.status == 200, r.text
    return Call(f"/v1/readings/{reading_id}/messages", headers=at(t + 2), secrets=(reading_id, text))


async def _earnings(world: "World") -> Call:
    reading_id, _t = await _reading_between(world.owner, world.owner_advisor, "ended")
    return Call("/v1/advisors/me/earnings", secrets=(reading_id,))


async def _reviews(world: "World") -> Call:
    reading_id, _t = await _reading_between(world.owner, world.owner_advisor, "ended")
    r = await world.owner.client.post(f"/v1/readings/{reading_id}/review", json={"rating": 4, "comment": "Kind"})
    assert r.status == 201, r.text
    return Call(f"/v1/advisors/{world.owner_advisor.id}/reviews")


# --- advisor blocks: the owner_advisor blocks the owner (its reading's client) ---


async def _met(world: "World") -> None:
    await _reading_between(world.owner, world.owner_advisor, "ended")


async def _block_client(world: "World") -> Call:
    await _met(world)
    return Call("/v1/advisors/me/blocks", {"client_id": str(world.owner.id)}, secrets=(str(world.owner.id),))


async def _blocked(world: "World") -> None:
    await _met(world)
    r = await world.owner_advisor.client.post("/v1/advisors/me/blocks", json={"client_id": str(world.owner.id)})
    assert r.status == 201, r.text


async def _list_blocks(world: "World") -> Call:
    await _blocked(world)
    return Call("/v1/advisors/me/blocks", secrets=(str(world.owner.id),))


async def _unblock(world: "World") -> Call:
    await _blocked(world)
    return Call(f"/v1/advisors/me/blocks/{world.owner.id}")


# --- promotions (promo_codes.py, promo_redemptions.py, satisfaction.py) ---


def _code_body() -> dict[str, Any]:
    from clairvora.clock import rfc3339
    from support import unique

    return {
        "code": unique("MX").upper()[:32],
        "credit_cents": 300,
        "valid_until": rfc3339(int(time.time() * 1000) + 86_400_000),
        "max_redemptions": 10,
    }


async def _new_code(world: "World") -> str:
    from support import unique

    r = await world.admin.client.post("/v1/admin/promo-codes", _code_body(), headers={"idempotency-key": unique()})
    assert r.status == 201, r.text
    return r.json()["id"]


async def _create_code(_world: "World") -> Call:
    from support import unique

    return Call("/v1/admin/promo-codes", _code_body(), {"idempotency-key": unique("mxpc")})


async def _list_codes(world: "World") -> Call:
    await _new_code(world)
    return Call("/v1/admin/promo-codes")


async def _get_code(world: "World") -> Call:
    return Call(f"/v1/admin/promo-codes/{await _new_code(world)}")


async def _disable_code(world: "World") -> Call:
    from support import unique

    return Call(f"/v1/admin/promo-codes/{await _new_code(world)}/disable", headers={"idempotency-key": unique()})


async def _redeem(world: "World") -> Call:
    """Each caller redeems the code for itself (one per client); the owner's promo credit moves only for the owner."""
    from support import unique

    code_id = await _new_code(world)
    r = await world.admin.client.get(f"/v1/admin/promo-codes/{code_id}")
    return Call("/v1/promo-codes/redeem", {"code": r.json()["code"]}, {"idempotency-key": unique("mxrd")})


async def _owner_promo(world: "World") -> Any:
    return (await world.owner.client.get("/v1/wallet")).json()["promo_cents"]


async def _claim(world: "World") -> Call:
    from market_support import at
    from support import unique

    reading_id, t = await _reading_between(world.owner, world.owner_advisor, "ended")
    headers = at(t, **{"idempotency-key": unique("mxsc")})
    return Call(f"/v1/readings/{reading_id}/satisfaction-claim", {"reason": "Matrix claim"}, headers)


async def _admin_credit(world: "World") -> Call:
    from support import unique

    reading_id, _t = await _reading_between(world.owner, world.owner_advisor, "ended")
    return Call(
        f"/v1/admin/readings/{reading_id}/satisfaction-credit",
        {"amount_cents": 50, "reason": "Matrix goodwill"},
        {"idempotency-key": unique("mxsa")},
    )


# --- payouts: the owner_advisor's receiver, earnings and payouts -------------


async def _payout_method(world: "World") -> Call:
    from payout_support import set_method
    from support import unique

    masked = f"x***@{unique('mx')}.example.com"
    r = await set_method(world.owner_advisor, "x" + masked[4:])
    assert r.status == 200 and r.json()["receiver_masked"] == masked, r.text
    return Call("/v1/advisors/me/payout-method", secrets=(masked,))


async def _own_method(world: "World") -> Any:
    return (await world.owner_advisor.client.get("/v1/advisors/me/payout-method")).json()


async def _put_payout_method(world: "World") -> Call:
    from support import unique

    versions = {
        name: (await getattr(world, name).client.get("/v1/advisors/me/payout-method")).headers.get("etag", '"0"')
        for name in ("owner_advisor", "other_advisor")
    }
    body = {"recipient_type": "EMAIL", "receiver": f"{unique('mxp')}@example.com"}
    return Call(
        "/v1/advisors/me/payout-method",
        body,
        {"if-match": versions["owner_advisor"]},
        body_for=lambda caller: (body, {"if-match": versions.get(caller, versions["owner_advisor"])}),
    )


async def _cleared_owner_advisor(world: "World") -> None:
    from payout_support import DAY_MS, clear, earn, now_ms, receiver, set_method

    await earn(world.owner_advisor.id, 20, now_ms() - 8 * DAY_MS)
    await clear(world.owner_advisor.id, now_ms())
    r = await set_method(world.owner_advisor, receiver())
    assert r.status == 200, r.text


async def _request_payout(world: "World") -> Call:
    from support import unique

    await _cleared_owner_advisor(world)
    return Call("/v1/advisors/me/payouts", {}, {"idempotency-key": unique("mxpo")})


async def _a_payout(world: "World") -> str:
    from payout_support import request_payout

    await _cleared_owner_advisor(world)
    r = await request_payout(world.owner_advisor)
    assert r.status == 201, r.text
    return str(r.json()["id"])


async def _list_payouts(world: "World") -> Call:
    return Call("/v1/advisors/me/payouts", secrets=(await _a_payout(world),))


async def _get_payout(world: "World") -> Call:
    payout_id = await _a_payout(world)
    return Call(f"/v1/advisors/me/payouts/{payout_id}", secrets=(payout_id,))


async def _paypal_webhook(world: "World") -> Call:
    """Each caller posts its own copy (its own event id) of a payout's signed notification."""
    import json

    import local_runtime

    from support import unique

    payout_id = await _a_payout(world)
    (delivery,) = [d for d in local_runtime.paypalControl.takeWebhooks() if payout_id in d["body"]]
    event = json.loads(delivery["body"])

    def signed(_caller: str) -> tuple[Any, dict[str, str]]:
        copy = local_runtime.paypalControl.signEvent({**event, "id": f"WH-{unique('mxw')}"})
        return str(copy["body"]), {k: str(v) for k, v in dict(copy["headers"]).items()}

    return Call("/v1/webhooks/paypal", body_for=signed)


PARTIES = ("owner", "counterpart")
# Someone else's reading answers 404 to another client, another advisor and an admin alike.
PARTY_ONLY = {"other_client": 404, "other_advisor": 404, "admin": 404}


ROWS: list[Row] = [
    Row("GET", "/health", fixed("/health"), PUBLIC),
    Row("GET", "/openapi.json", fixed("/openapi.json"), PUBLIC),
    # "me" routes act on the caller's own row: each caller sees itself (checked in the test), never the owner.
    Row("GET", "/v1/me", fixed("/v1/me"), authed(200, other_client=200, other_advisor=200, admin=200)),
    Row("PATCH", "/v1/me", _patch_me, authed(200, other_client=200, other_advisor=200, admin=200), may_write=ALL_SELF),
    # Export and erasure act on the caller's own data only: each caller gets its own export (never the
    # owner's words) and erases itself (the reply's id is checked against the caller, as for /v1/me).
    Row("GET", "/v1/me/export", _export, authed(200, other_client=200, other_advisor=200, admin=200)),
    Row(
        "DELETE",
        "/v1/me",
        _erase_me,
        authed(200, other_client=200, other_advisor=200, admin=200),
        may_write=ALL_SELF,
        fresh_world=True,
    ),
    Row(
        "POST",
        "/v1/advisors",
        fixed(
            "/v1/advisors",
            {"headline": "New advisor", "bio": "", "categories": ["tarot"], "rate_cents_per_minute": 100},
        ),
        authed(201, other_client=201, other_advisor=409, admin=201),
        may_write=("other_client", "admin", "owner"),
        fresh_world=True,
    ),
    Row("GET", "/v1/advisors", fixed("/v1/advisors"), PUBLIC),
    Row(
        "GET",
        "/v1/advisors/me",
        fixed("/v1/advisors/me"),
        authed(200, other_client=404, other_advisor=200, admin=404),
        owner="owner_advisor",
    ),
    Row(
        "PATCH",
        "/v1/advisors/me",
        _patch_advisor,
        authed(200, other_client=404, other_advisor=200, admin=404),
        owner="owner_advisor",
        may_write=ADVISORS_SELF,
        owner_state=_own_advisor_state,
    ),
    Row("GET", "/v1/advisors/{advisor_id:id}", lambda w: fixed(f"/v1/advisors/{w.owner_advisor.id}")(w), PUBLIC),
    Row(
        "PUT",
        "/v1/advisors/me/photo",
        _put_photo,
        authed(200, other_client=404, other_advisor=200, admin=404),
        owner="owner_advisor",
        may_write=ADVISORS_SELF,
        owner_state=_own_advisor_state,
    ),
    Row(
        "DELETE",
        "/v1/advisors/me/photo",
        _delete_photo,
        authed(200, other_client=404, other_advisor=200, admin=404),
        owner="owner_advisor",
        may_write=ADVISORS_SELF,
        owner_state=_own_advisor_state,
    ),
    Row("GET", "/v1/advisors/{advisor_id:id}/photo", _get_photo, PUBLIC),
    Row("GET", "/v1/wallet", fixed("/v1/wallet"), authed(200, other_client=200, other_advisor=200, admin=200)),
    Row(
        "GET",
        "/v1/wallet/transactions",
        fixed("/v1/wallet/transactions"),
        authed(200, other_client=200, other_advisor=200, admin=200),
    ),
    Row(
        "POST",
        "/v1/wallet/deposits",
        _deposit,
        authed(201, other_client=201, other_advisor=201, admin=201),
        may_write=ALL_SELF,
        owner_state=_owner_wallet,
    ),
    # Refunds of unused funds: each caller refunds its own wallet; only the owner has a settled card deposit
    # (the others: no cash, or cash that came from no card: 409), and only the owner sees its refund.
    Row(
        "POST",
        "/v1/wallet/refunds",
        _wallet_refund,
        authed(201, other_client=409, other_advisor=409, admin=409),
        may_write=("owner",),
    ),
    Row(
        "GET",
        "/v1/wallet/refunds",
        fixed("/v1/wallet/refunds"),
        authed(200, other_client=200, other_advisor=200, admin=200),
    ),
    Row(
        "GET",
        "/v1/wallet/refunds/{refund_id:id}",
        _owner_refund,
        authed(200, other_client=404, other_advisor=404, admin=404),
    ),
    # Chargebacks put the owner on hold: worlds of their own.
    Row(
        "POST",
        "/v1/admin/payments/{payment_id:id}/chargebacks",
        _chargeback,
        admin_only(201),
        may_write=("admin",),
        fresh_world=True,
    ),
    Row(
        "POST",
        "/v1/admin/chargebacks/{chargeback_id:id}/resolve",
        _resolve_chargeback,
        admin_only(200),
        may_write=("admin",),
        fresh_world=True,
    ),
    # Authorize.Net proves itself with the body's signature, not a token: every caller's signed event is received.
    Row("POST", "/v1/webhooks/authorizenet", _webhook, PUBLIC, may_write=CALLERS),
    Row("POST", "/v1/admin/readings/{reading_id:id}/refund", _refund, admin_only(201), may_write=("admin",)),
    Row("GET", "/v1/admin/ledger/check", fixed("/v1/admin/ledger/check"), admin_only(200)),
    # Ledger periods (test_periods.py closes them): the matrix asks for an end not yet
    # past (422, nothing opens) and about a period that does not exist (404).
    Row("GET", "/v1/admin/ledger/periods", fixed("/v1/admin/ledger/periods"), admin_only(200)),
    Row(
        "POST",
        "/v1/admin/ledger/periods",
        fixed("/v1/admin/ledger/periods", {"ends_before": "2999-01-01T00:00:00Z"}),
        admin_only(422),
    ),
    Row(
        "GET",
        "/v1/admin/ledger/periods/{period_id:id}",
        fixed(f"/v1/admin/ledger/periods/{MISSING_ID}"),
        admin_only(404),
    ),
    Row(
        "POST",
        "/v1/admin/ledger/periods/{period_id:id}/advance",
        fixed(f"/v1/admin/ledger/periods/{MISSING_ID}/advance"),
        admin_only(404),
    ),
    Row(
        "POST",
        "/v1/admin/ledger/periods/{period_id:id}/verify",
        fixed(f"/v1/admin/ledger/periods/{MISSING_ID}/verify"),
        admin_only(404),
    ),
    # Readings. Anyone signed in may request a reading for themselves (the advisor and
    # admin have no funds: 402; the advisor may not book itself: 422).
    Row(
        "POST",
        "/v1/readings",
        _request_reading,
        authed(201, other_client=201, other_advisor=402, admin=402),
        counterpart=422,
        may_write=("other_client", "owner"),
        fresh_world=True,
    ),
    # Lists hold only the caller's readings: the owner's is in its own and its advisor's list only.
    Row(
        "GET",
        "/v1/readings",
        _my_readings,
        authed(200, other_client=200, other_advisor=200, admin=200),
        counterpart=200,
    ),
    Row("GET", "/v1/readings/{reading_id:id}", _on_reading("ended"), authed(200, **PARTY_ONLY), counterpart=200),
    # The reading's advisor accepts or declines; its client may not (403 on its own reading).
    Row(
        "POST",
        "/v1/readings/{reading_id:id}/accept",
        _on_reading("requested", "/accept"),
        authed(200, **PARTY_ONLY),
        owner="owner_advisor",
        counterpart=403,
        may_write=("owner",),
        fresh_world=True,
    ),
    Row(
        "POST",
        "/v1/readings/{reading_id:id}/decline",
        _on_reading("requested", "/decline"),
        authed(200, **PARTY_ONLY),
        owner="owner_advisor",
        counterpart=403,
        may_write=("owner",),
        fresh_world=True,
    ),
    # The client withdraws its request; the advisor may not (403).
    Row(
        "POST",
        "/v1/readings/{reading_id:id}/cancel",
        _on_reading("requested", "/cancel"),
        authed(200, **PARTY_ONLY),
        counterpart=403,
        may_write=("owner",),
        fresh_world=True,
    ),
    # Either party keeps the reading alive, ends it, chats and reads the chat.
    Row(
        "POST",
        "/v1/readings/{reading_id:id}/heartbeat",
        _on_reading("active", "/heartbeat"),
        authed(200, **PARTY_ONLY),
        counterpart=200,
        may_write=PARTIES,
        fresh_world=True,
    ),
    Row(
        "POST",
        "/v1/readings/{reading_id:id}/end",
        _on_reading("active", "/end"),
        authed(200, **PARTY_ONLY),
        counterpart=200,
        counterpart_uses_up=True,
        may_write=PARTIES,
        fresh_world=True,
    ),
    Row(
        "POST",
        "/v1/readings/{reading_id:id}/messages",
        _on_reading("active", "/messages", {"body": "Matrix hello"}),
        authed(201, **PARTY_ONLY),
        counterpart=201,
        may_write=PARTIES,
        fresh_world=True,
    ),
    Row("GET", "/v1/readings/{reading_id:id}/messages", _chat, authed(200, **PARTY_ONLY), counterpart=200),
    # Only the client reviews (the advisor gets 403 on its own reading).
    Row(
        "POST",
        "/v1/readings/{reading_id:id}/review",
        _on_reading("ended", "/review", {"rating": 5, "comment": "Matrix review"}),
        authed(201, **PARTY_ONLY),
        counterpart=403,
        may_write=("owner",),
    ),
    # Each advisor sees its own earnings only; users who are no advisor have none (404).
    Row(
        "GET",
        "/v1/advisors/me/earnings",
        _earnings,
        authed(200, other_client=404, other_advisor=200, admin=404),
        owner="owner_advisor",
        counterpart=404,
    ),
    Row("GET", "/v1/advisors/{advisor_id:id}/reviews", _reviews, PUBLIC),
    # Blocks are the advisor's own: another advisor cannot block a client it never met (404, like
    # an unknown id), sees only its own (empty) list and cannot lift the owner's block; non-advisors 404.
    Row(
        "POST",
        "/v1/advisors/me/blocks",
        _block_client,
        authed(201, other_client=404, other_advisor=404, admin=404),
        owner="owner_advisor",
        may_write=("owner",),
        fresh_world=True,
    ),
    Row(
        "GET",
        "/v1/advisors/me/blocks",
        _list_blocks,
        authed(200, other_client=404, other_advisor=200, admin=404),
        owner="owner_advisor",
        fresh_world=True,
    ),
    # Promo codes: admins manage them; every signed-in caller redeems for itself.
    Row("POST", "/v1/admin/promo-codes", _create_code, admin_only(201), may_write=("admin",)),
    Row("GET", "/v1/admin/promo-codes", _list_codes, admin_only(200)),
    Row("GET", "/v1/admin/promo-codes/{code_id:id}", _get_code, admin_only(200)),
    Row("POST", "/v1/admin/promo-codes/{code_id:id}/disable", _disable_code, admin_only(200), may_write=("admin",)),
    Row(
        "POST",
        "/v1/promo-codes/redeem",
        _redeem,
        authed(201, other_client=201, other_advisor=201, admin=201),
        may_write=ALL_SELF,
        owner_state=_owner_promo,
        fresh_world=True,  # promo credit would pay the shared owner's later minutes (other rows charge its wallet)
    ),
    # A satisfaction claim is the reading's client's (the advisor 403, anyone else 404); admins grant one.
    Row(
        "POST",
        "/v1/readings/{reading_id:id}/satisfaction-claim",
        _claim,
        authed(201, **PARTY_ONLY),
        counterpart=403,
        may_write=("owner",),
        fresh_world=True,
    ),
    Row(
        "POST",
        "/v1/admin/readings/{reading_id:id}/satisfaction-credit",
        _admin_credit,
        admin_only(201),
        may_write=("admin",),
        fresh_world=True,  # the shared owner's promo credit (the redeem row) would pay the minute
    ),
    Row(
        "DELETE",
        "/v1/advisors/me/blocks/{client_id:id}",
        _unblock,
        authed(204, other_client=404, other_advisor=404, admin=404),
        owner="owner_advisor",
        may_write=("owner",),
        fresh_world=True,
    ),
    # Payouts are the advisor's own: a client never sees any (404: no advisor profile), another
    # advisor sees and changes only its own receiver and payouts, never the owner's.
    Row(
        "GET",
        "/v1/advisors/me/payout-method",
        _payout_method,
        authed(200, other_client=404, other_advisor=200, admin=404),
        owner="owner_advisor",
    ),
    Row(
        "PUT",
        "/v1/advisors/me/payout-method",
        _put_payout_method,
        authed(200, other_client=404, other_advisor=200, admin=404),
        owner="owner_advisor",
        may_write=ADVISORS_SELF,
        owner_state=_own_method,
    ),
    # Another advisor asks for a payout of ITS OWN earnings: it has set no receiver (409).
    Row(
        "POST",
        "/v1/advisors/me/payouts",
        _request_payout,
        authed(201, other_client=404, other_advisor=409, admin=404),
        owner="owner_advisor",
        may_write=("owner",),
        fresh_world=True,
    ),
    Row(
        "GET",
        "/v1/advisors/me/payouts",
        _list_payouts,
        authed(200, other_client=404, other_advisor=200, admin=404),
        owner="owner_advisor",
        fresh_world=True,
    ),
    Row(
        "GET",
        "/v1/advisors/me/payouts/{payout_id:id}",
        _get_payout,
        authed(200, other_client=404, other_advisor=404, admin=404),
        owner="owner_advisor",
        fresh_world=True,
    ),
    # PayPal proves itself through its verification API, not a token: every caller's signed copy is received.
    Row("POST", "/v1/webhooks/paypal", _paypal_webhook, PUBLIC, may_write=CALLERS, fresh_world=True),
]


_cache: dict[str, Any] = {}


async def shared_world() -> World:
    """One set of actors for the whole matrix (each row makes its own objects)."""
    if "world" not in _cache:
        _cache["world"] = await new_world()
    return _cache["world"]


async def new_world() -> World:
    owner = await actor("own")
    await credit(owner.id, 100_000)
    other_client = await actor("oth")
    await credit(other_client.id, 100_000)
    other_advisor = await make_advisor(await actor("oad"))
    # Other users have objects of their own: other_advisor is the advisor of other_client's reading.
    await _reading_between(other_client, other_advisor, "ended")
    return World(
        owner=owner,
        owner_advisor=await make_advisor(await actor("adv")),
        other_client=other_client,
        other_advisor=other_advisor,
        admin=await make_admin(await actor("adm")),
    )


async def world_for(row: Row) -> World:
    return await new_world() if row.fresh_world else await shared_world()


def counterpart_of(owner: str) -> str:
    """The other party of the owner's reading."""
    return "owner" if owner == "owner_advisor" else "owner_advisor"


async def client_for(caller: str, world: World, owner: str = "owner") -> Client:
    """The caller's client; expired and foreign-key tokens carry the row owner's own claims."""
    if caller == "counterpart":
        return getattr(world, counterpart_of(owner)).client
    if caller == "anonymous":
        return Client()
    sub = getattr(world, owner).sub
    if caller == "expired":
        now_s = int(time.time())
        return Client(await token_for(sub, exp=now_s - 3600, iat=now_s - 3660, nbf=now_s - 3665))
    if caller == "foreign_key":
        if "foreign_key" not in _cache:
            _cache["foreign_key"] = await generate_other_private_key()
        return Client(await sign_token(claims_for(sub), key=_cache["foreign_key"]))
    return getattr(world, owner if caller == "owner" else caller).client
