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
    fresh_world: bool = False  # the row changes roles (becoming an advisor)


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


async def _patch_me(world: "World") -> Call:
    # Each caller patches its own row; every actor is at the owner's version here.
    version = await _me_version(world.owner.client, "/v1/me")
    return Call("/v1/me", {"display_name": "Matrix"}, {"if-match": f'"{version}"'})


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


ROWS: list[Row] = [
    Row("GET", "/health", fixed("/health"), PUBLIC),
    Row("GET", "/openapi.json", fixed("/openapi.json"), PUBLIC),
    # "me" routes act on the caller's own row: each caller sees itself (checked in the test), never the owner.
    Row("GET", "/v1/me", fixed("/v1/me"), authed(200, other_client=200, other_advisor=200, admin=200)),
    Row("PATCH", "/v1/me", _patch_me, authed(200, other_client=200, other_advisor=200, admin=200), may_write=ALL_SELF),
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
    # Authorize.Net proves itself with the body's signature, not a token: every caller's signed event is received.
    Row("POST", "/v1/webhooks/authorizenet", _webhook, PUBLIC, may_write=CALLERS),
    Row("POST", "/v1/admin/readings/{reading_id:id}/refund", _refund, admin_only(201), may_write=("admin",)),
    Row("GET", "/v1/admin/ledger/check", fixed("/v1/admin/ledger/check"), admin_only(200)),
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
    return World(
        owner=owner,
        owner_advisor=await make_advisor(await actor("adv")),
        other_client=other_client,
        other_advisor=await make_advisor(await actor("oad")),
        admin=await make_admin(await actor("adm")),
    )


async def client_for(caller: str, world: World, owner: str = "owner") -> Client:
    """The caller's client; expired and foreign-key tokens carry the row owner's own claims."""
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


# Routes that landed after the table above was written get the columns that
# need no objects: missing, expired and foreign-key tokens are 401, and on admin
# routes a signed-in non-admin is 403. Their object columns (owner, other
# client, other advisor) wait for a full row.
_FULL = {(r.method, r.pattern) for r in ROWS}
_SOME_ID = "1000000000000001"


def _auth_only_prepare(method: str, pattern: str) -> Prepare:
    path = "/".join(_SOME_ID if p.startswith("{") and p.endswith(":id}") else p for p in pattern.split("/"))
    body = None if method in ("GET", "HEAD", "DELETE") else {}

    async def prepare(_world: World) -> Call:
        from support import unique

        return Call(path, body, {"if-match": '"1"', "idempotency-key": unique("ao")})

    return prepare


def _auth_only_rows() -> list[Row]:
    from clairvora.app import ROUTES

    rows = []
    for r in ROUTES:
        if (r.method, r.pattern) in _FULL or r.auth not in ("user", "admin"):
            continue
        expect = {"anonymous": 401, "expired": 401, "foreign_key": 401}
        if r.auth == "admin":
            expect["other_client"] = 403
        rows.append(Row(r.method, r.pattern, _auth_only_prepare(r.method, r.pattern), expect))
    return rows


AUTH_ONLY_ROWS = _auth_only_rows()
