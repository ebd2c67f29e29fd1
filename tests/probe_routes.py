"""Routes that exist only in tests, added to the app's router for one test
(the `probe_routes` fixture), to drive the real pipeline through shapes the
product routes do not have yet (typed ids, queries, nested bodies, failures)."""

import asyncio
from typing import Any

import pytest

from clairvora import app
from clairvora.db import sql
from clairvora.errors import Problem
from clairvora.ids import new_id
from clairvora.requests import RequestContext
from clairvora.responses import Reply
from clairvora.routing import Route, Router
from clairvora.validation import Int, ListOf, Obj, Str

ECHO_BODY = Obj(
    {
        "n": Int(low=0, high=10),
        "tags": ListOf(Str(min_len=1, max_len=5), max_items=3),
        "inner": Obj({"k": Str(max_len=3)}),
    },
    required=("n",),
)
ECHO_QUERY = Obj({"limit": Int(low=1, high=100)})

# Filled by the wait-until probe's background task, read by the tests.
background_done: list[str] = []


async def thing(rc: RequestContext) -> Reply:
    return Reply({"thing_id": str(rc.params["thing_id"])})


async def name(rc: RequestContext) -> Reply:
    return Reply({"name": rc.params["name"]})


async def echo(rc: RequestContext) -> Reply:
    return Reply({"body": await rc.parsed_body(), "query": rc.parsed_query()})


async def boom(rc: RequestContext) -> Reply:
    raise RuntimeError("boom: Bearer abc.def.ghi for ann@example.com at /srv/app.py line 12")


async def d1_boom(rc: RequestContext) -> Reply:
    await rc.db.all(sql("SELEC 1"))
    return Reply({})


async def teapot(rc: RequestContext) -> Reply:
    raise Problem(418, "teapot", "I'm a teapot", "Short and stout.")


async def wait_until(rc: RequestContext) -> Reply:
    marker = rc.header("x-marker") or "none"

    async def later() -> None:
        # Real asynchronous work after the reply is built: a few event-loop
        # turns and a D1 round trip.
        for _ in range(3):
            await asyncio.sleep(0)
        await rc.db.all(sql("SELECT count(*) AS n FROM categories"))
        background_done.append(marker)

    async def failing() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("background task failed")

    if rc.header("x-fail") == "yes":
        rc.wait_until(failing(), "probe_failing")
    rc.wait_until(later(), "probe_later")
    return Reply({"scheduled": marker})


async def env_view(rc: RequestContext) -> Reply:
    names = rc.header("x-names") or ""
    values: dict[str, Any] = {n: getattr(rc.env, n, None) for n in names.split(",") if n}
    db = rc.env.DB
    raw = await db.prepare("SELECT slug FROM categories ORDER BY slug LIMIT 2").all()
    rows = raw["results"]
    return Reply(
        {
            "values": {k: v if isinstance(v, str) else None for k, v in values.items()},
            "db_wrapper": type(db).__name__,
            "db_js_class": db._real_name,
            "result_type": type(raw).__mro__[1].__name__,
            "rows_type": type(rows).__name__,
            "row_types": sorted({type(r).__mro__[1].__name__ if type(r) is not dict else "dict" for r in rows}),
            "rows": [dict(r) for r in rows],
            "instance_id": id(rc.ctx),
        }
    )


async def write_user(rc: RequestContext) -> Reply:
    """Writes one user row (for counter checks); the sub comes from the query."""
    sub = rc.query["sub"][0]
    now = rc.clock.now_ms()
    results = await rc.db.batch(
        [
            sql(
                "INSERT INTO users (id, clerk_user_id, created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?)",
                new_id(),
                sub,
                now,
                now,
            ),
            sql("SELECT id FROM users WHERE clerk_user_id = ?", sub),
        ]
    )
    meta = [{"rows_read": r.rows_read, "rows_written": r.rows_written} for r in results]
    return Reply({"meta": meta}, status=201)


ROUTES = [
    Route("GET", "/test/things/{thing_id:id}", thing, "probe", auth="none"),
    Route("DELETE", "/test/things/{thing_id:id}", thing, "probe", auth="none"),
    Route("GET", "/test/names/{name:str}", name, "probe", auth="none"),
    Route("POST", "/test/echo", echo, "probe", auth="none", body=ECHO_BODY, query=ECHO_QUERY),
    Route("GET", "/test/boom", boom, "probe", auth="none"),
    Route("GET", "/test/d1-boom", d1_boom, "probe", auth="none"),
    Route("GET", "/test/teapot", teapot, "probe", auth="none"),
    Route("POST", "/test/wait-until", wait_until, "probe", auth="none"),
    Route("GET", "/test/env", env_view, "probe", auth="none"),
    Route("POST", "/test/write-user", write_user, "probe", auth="none", primary=True),
]


@pytest.fixture
def probe_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app, "ROUTER", Router([*app.ROUTES, *ROUTES]))
