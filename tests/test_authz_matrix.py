"""Authorization matrix: every route x every kind of caller -> the expected status.

Callers (columns):
  owner          the client who owns the object (its wallet, its reading), or the
                 advisor for advisor-side routes
  other_client   another client, with objects of their own
  other_advisor  the advisor of a DIFFERENT reading
  admin          an admin who is not a party to the object
  anonymous      no token
  expired        the owner's token, expired an hour ago
  foreign_key    the owner's claims signed by a key the Worker does not trust

For each route (row) one object is made; the callers who must be refused go
first and must change nothing (row counts of every table unchanged), the owner
goes last. Someone else's object answers 404 (no existence oracle), never 403.
Every route of the table must have a row: a new route without one fails here.
"""

import pytest

from clairvora.app import ROUTES
from matrix import CALLERS, ROWS, Row, client_for, shared_world
from world import row_counts


def test_every_route_has_a_matrix_row():
    rows = {(r.method, r.pattern) for r in ROWS}
    routes = {(r.method, r.pattern) for r in ROUTES}
    assert routes <= rows, f"routes without an authorization row: {sorted(routes - rows)}"
    assert rows <= routes, f"rows for routes that do not exist: {sorted(rows - routes)}"
    assert all(set(r.expect) == set(CALLERS) for r in ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.method} {r.pattern}" for r in ROWS])
async def test_authorization_matrix(row: Row):
    world = await shared_world()
    call = await row.prepare(world)
    mismatches = []
    for caller in CALLERS:  # the owner last: refused callers must not disturb its object
        client = await client_for(caller, world)
        before = await row_counts()
        r = await client.request(row.method, call.path, json_body=call.body, headers=call.headers)
        if r.status != row.expect[caller]:
            mismatches.append(f"{caller}: expected {row.expect[caller]}, got {r.status} {r.text[:200]}")
            continue
        if r.status >= 400:
            assert r.headers["content-type"] == "application/problem+json", (caller, r.headers)
        if caller not in row.may_write:
            assert await row_counts() == before, f"{caller} changed rows with {r.status} on {row.pattern}"
        if row.pattern == "/v1/me" and r.status == 200:
            me = getattr(world, caller, None) if caller in ("owner", "other_client", "other_advisor", "admin") else None
            assert me is not None and r.json()["id"] == str(me.id), f"/v1/me answered someone else for {caller}"
    assert not mismatches, f"{row.method} {row.pattern}:\n" + "\n".join(mismatches)


def matrix_size() -> int:
    return len(ROWS) * len(CALLERS)
