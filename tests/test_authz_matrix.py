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
from matrix import AUTH_ONLY_ROWS, CALLERS, ROWS, Row, client_for, new_world, shared_world
from world import row_counts


def test_every_route_has_a_matrix_row():
    rows = {(r.method, r.pattern) for r in ROWS}
    partial = {(r.method, r.pattern) for r in AUTH_ONLY_ROWS}
    routes = {(r.method, r.pattern) for r in ROUTES}
    public_without_row = {(r.method, r.pattern) for r in ROUTES if r.auth not in ("user", "admin")} - rows
    print(
        f"\nauthorization matrix: full rows {len(rows)}, token-only rows (no object columns yet) "
        f"{sorted(partial)}, public routes without a row {sorted(public_without_row)}"
    )
    assert routes <= rows | partial | public_without_row
    assert rows <= routes, f"rows for routes that do not exist: {sorted(rows - routes)}"
    assert all(set(r.expect) == set(CALLERS) for r in ROWS)


@pytest.mark.parametrize("row", ROWS + AUTH_ONLY_ROWS, ids=[f"{r.method} {r.pattern}" for r in ROWS + AUTH_ONLY_ROWS])
async def test_authorization_matrix(row: Row):
    world = await new_world() if row.fresh_world else await shared_world()
    call = await row.prepare(world)
    owner_before = await row.owner_state(world) if row.owner_state else None
    mismatches = []
    before = await row_counts()
    for caller in CALLERS:  # the owner last: refused callers must not disturb its object
        if caller not in row.expect:
            continue
        client = await client_for(caller, world, row.owner)
        body, headers = call.body, dict(call.headers)
        if call.body_for is not None:
            body, extra = call.body_for(caller)
            headers.update(extra)
        if caller == "owner" and row.owner_state is not None:
            assert await row.owner_state(world) == owner_before, (
                f"{row.pattern}: another caller moved the owner's object"
            )
        if isinstance(body, (str, bytes)):
            r = await client.request(row.method, call.path, body=body, headers=headers)
        elif call.raw is not None:
            r = await client.request(row.method, call.path, body=call.raw, headers=headers)
        else:
            r = await client.request(row.method, call.path, json_body=body, headers=headers)
        if r.status != row.expect[caller]:
            mismatches.append(f"{caller}: expected {row.expect[caller]}, got {r.status} {r.text[:200]}")
            before = await row_counts()
            continue
        if r.status >= 400:
            assert r.headers["content-type"] == "application/problem+json", (caller, r.headers)
        after = await row_counts()
        if caller not in row.may_write:
            assert after == before, f"{caller} changed rows with {r.status} on {row.pattern}"
        before = after
        if row.pattern == "/v1/me" and r.status == 200:
            assert r.json()["id"] == str(getattr(world, caller).id), f"/v1/me answered someone else for {caller}"
    assert not mismatches, f"{row.method} {row.pattern}:\n" + "\n".join(mismatches)


def test_matrix_size():
    # 7 callers x every route; printed for the report.
    print(f"authorization matrix: {len(ROWS)} routes x {len(CALLERS)} callers = {len(ROWS) * len(CALLERS)} cells")
    cells = len(ROWS) * len(CALLERS) + sum(len(r.expect) for r in AUTH_ONLY_ROWS)
    print(f"authorization matrix: {cells} cells")
    assert len(ROWS) >= 18
