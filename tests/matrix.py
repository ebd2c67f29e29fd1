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


Prepare = Callable[[World], Awaitable[Call]]


@dataclass
class Row:
    method: str
    pattern: str
    prepare: Prepare
    expect: dict[str, int]  # caller -> status; missing token-less callers default to 401
    # Callers whose call may change state (their own data), so row counts are not compared.
    may_write: tuple[str, ...] = ()


def authed(owner: int, *, other_client: int, other_advisor: int, admin: int) -> dict[str, int]:
    return {"owner": owner, "other_client": other_client, "other_advisor": other_advisor, "admin": admin,
            "anonymous": 401, "expired": 401, "foreign_key": 401}


def fixed(path: str, body: Any = None, headers: dict[str, str] | None = None) -> Prepare:
    async def prepare(_world: World) -> Call:
        return Call(path, body, headers or {})
    return prepare


async def _patch_me(world: World) -> Call:
    # Each caller patches its own row; every actor is still at the owner's version here.
    version = (await world.owner.client.get("/v1/me")).json()["version"]
    return Call("/v1/me", {"display_name": "Matrix"}, {"if-match": f'"{version}"'})


ROWS: list[Row] = [
    Row("GET", "/health", fixed("/health"), PUBLIC),
    Row("GET", "/openapi.json", fixed("/openapi.json"), PUBLIC),
    # "me" routes act on the caller's own row: each caller sees itself (checked below), never the owner.
    Row("GET", "/v1/me", fixed("/v1/me"), authed(200, other_client=200, other_advisor=200, admin=200)),
    Row("PATCH", "/v1/me", _patch_me, authed(200, other_client=200, other_advisor=200, admin=200),
        may_write=("other_client", "other_advisor", "admin", "owner")),
]


_cache: dict[str, Any] = {}


async def shared_world() -> World:
    """One set of actors for the whole matrix (each row makes its own objects)."""
    if "world" not in _cache:
        _cache["world"] = await _new_world()
    return _cache["world"]


async def _new_world() -> World:
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


async def client_for(caller: str, world: World) -> Client:
    if caller == "anonymous":
        return Client()
    if caller == "expired":
        now_s = int(time.time())
        return Client(await token_for(world.owner.sub, exp=now_s - 3600, iat=now_s - 3660, nbf=now_s - 3665))
    if caller == "foreign_key":
        if "foreign_key" not in _cache:
            _cache["foreign_key"] = await generate_other_private_key()
        return Client(await sign_token(claims_for(world.owner.sub), key=_cache["foreign_key"]))
    return getattr(world, caller).client
