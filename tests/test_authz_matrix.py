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

On a reading the owner is the party allowed to act (the client to cancel or
review, the advisor to accept or decline, either one for the rest). Rows on a
reading also record the OTHER party's status ("counterpart": e.g. the client
calling accept on its own reading), asserted like every other column.

For each route (row) one object is made; the callers who must be refused go
first and must change nothing (row counts of every table unchanged), the owner
goes last. Someone else's object answers 404 (no existence oracle), never 403.
Every route of the table must have a full row (every caller, an expected
status each): a new route without one fails here.
"""

import pytest

from clairvora.app import ROUTES
from matrix import CALLERS, ROWS, Row, client_for, world_for
from world import row_counts


def test_every_route_has_a_full_matrix_row():
    rows = [(r.method, r.pattern) for r in ROWS]
    routes = {(r.method, r.pattern) for r in ROUTES}
    assert len(rows) == len(set(rows)), "a route has two rows"
    assert routes - set(rows) == set(), f"routes without a matrix row: {sorted(routes - set(rows))}"
    assert set(rows) - routes == set(), f"rows for routes that do not exist: {sorted(set(rows) - routes)}"
    for r in ROWS:
        assert set(r.expect) == set(CALLERS), f"{r.method} {r.pattern}: a status for every caller"


def _order(row: Row) -> list[str]:
    """The owner last (refused callers must not disturb its object), its counterpart just before."""
    callers = [c for c in CALLERS if c != "owner"]
    return callers + (["counterpart"] if row.counterpart is not None else []) + ["owner"]


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.method} {r.pattern}" for r in ROWS])
async def test_authorization_matrix(row: Row):
    world = await world_for(row)
    call = await row.prepare(world)
    owner_before = await row.owner_state(world) if row.owner_state else None
    expect = {**row.expect, **({"counterpart": row.counterpart} if row.counterpart is not None else {})}
    mismatches = []
    before = await row_counts()
    for caller in _order(row):
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
        if r.status != expect[caller]:
            mismatches.append(f"{caller}: expected {expect[caller]}, got {r.status} {r.text[:200]}")
            before = await row_counts()
            continue
        if r.status >= 400:
            assert r.headers["content-type"] == "application/problem+json", (caller, r.headers)
        for secret in call.secrets:
            if caller == "owner":  # the check below could fail: the owner does see it
                assert secret in r.text, f"{row.pattern}: the owner's answer lacks {secret!r}"
            elif caller != "counterpart":
                assert secret not in r.text, f"{row.pattern}: {caller} was shown the owner's {secret!r}"
        after = await row_counts()
        if caller not in row.may_write:
            assert after == before, f"{caller} changed rows with {r.status} on {row.pattern}"
        before = after
        if caller == "counterpart" and row.counterpart_uses_up:
            call = await row.prepare(world)
            before = await row_counts()
        if row.pattern == "/v1/me" and r.status == 200:
            assert r.json()["id"] == str(getattr(world, caller).id), f"/v1/me answered someone else for {caller}"
    assert not mismatches, f"{row.method} {row.pattern}:\n" + "\n".join(mismatches)


def test_matrix_size():
    """Printed for the report: every route x every caller, plus the counterpart cells on readings."""
    cells = len(ROWS) * len(CALLERS)
    counterparts = sum(r.counterpart is not None for r in ROWS)
    print(
        f"\nauthorization matrix: {len(ROWS)} routes x {len(CALLERS)} callers = {cells} cases"
        f" (+ {counterparts} counterpart cases on readings = {cells + counterparts} checked statuses)"
    )
    assert len(ROWS) == len(ROUTES) and cells == sum(len(r.expect) for r in ROWS)
