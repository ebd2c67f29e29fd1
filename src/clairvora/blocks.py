"""Advisor blocks (migrations/0070): an advisor blocks a client, lists its
blocks (newest first, keyset-paged) and lifts them.

Who can be blocked: a client who has requested a reading from this advisor at
least once (any outcome). That is the only way an advisor learns a client's id,
and it keeps the route from being a user-existence oracle: an id that is no
user, and a user who never asked this advisor for a reading, answer the same
404. Every statement names the caller as the advisor (`advisor_id = ?`), so
another advisor's blocks are invisible, like missing ones.

The block is enforced where readings are requested: reading_requests._INSERT_READING
carries `NOT EXISTS (SELECT 1 FROM advisor_blocks ...)`, so it holds against a
block committed between the handler's precheck and its write. The blocked
client is answered 409 `advisor_unavailable` (the code an offline or busy
advisor answers), without the advisor's status: the client learns that this
advisor cannot take its request, not that it was blocked (no label to escalate
against, nothing new for client apps to handle). Requests already open are
left to the advisor to decline.
"""

from typing import Any

from .clock import rfc3339
from .db import sql
from .errors import not_found
from .ids import parse_id
from .openapi import page_schema
from .readings import parse_time_cursor, time_cursor
from .requests import RequestContext
from .responses import Reply
from .routing import Route
from .validation import Obj, Str, page_query

DEFAULT_PAGE = 25
MAX_PAGE = 100

BLOCK_CREATE = Obj(
    {"client_id": Str(min_len=1, max_len=20, description="The client's id (as on a reading of yours).")},
    required=("client_id",),
)
BLOCKS_QUERY = page_query(cursor_max_chars=40, max_page=MAX_PAGE, default_page=DEFAULT_PAGE)

# The caller is an advisor, and the client has asked it for a reading before.
# Blocking twice keeps the first row (ON CONFLICT DO NOTHING); the SELECT after
# it answers the block as it stands, in the same batch.
_INSERT_BLOCK = """
INSERT INTO advisor_blocks (advisor_id, client_id, created_at_ms)
SELECT a.user_id, ?, ?
FROM advisors a
WHERE a.user_id = ?
  AND EXISTS (SELECT 1 FROM readings r WHERE r.advisor_id = ? AND r.client_id = ?)
ON CONFLICT (advisor_id, client_id) DO NOTHING"""

_SELECT_BLOCK = "SELECT advisor_id, client_id, created_at_ms FROM advisor_blocks WHERE advisor_id = ? AND client_id = ?"

_IS_ADVISOR = "SELECT user_id FROM advisors WHERE user_id = ?"

_PAGE = """
SELECT client_id, created_at_ms FROM advisor_blocks
WHERE advisor_id = ? AND (created_at_ms, client_id) < (?, ?)
ORDER BY created_at_ms DESC, client_id DESC
LIMIT ?"""

_DELETE = "DELETE FROM advisor_blocks WHERE advisor_id = ? AND client_id = ?"


def block_view(row: dict[str, Any]) -> dict[str, Any]:
    return {"client_id": str(row["client_id"]), "created_at": rfc3339(row["created_at_ms"])}


_NO_SUCH_CLIENT = "client among those who requested a reading from you"


async def create_block(rc: RequestContext) -> Reply:
    body = await rc.parsed_body()
    client_id = parse_id(body["client_id"])
    if client_id is None:
        raise not_found(_NO_SUCH_CLIENT)
    uid = rc.user_id
    inserted, stored = await rc.db.batch(
        [
            sql(_INSERT_BLOCK, client_id, rc.clock.now_ms(), uid, uid, client_id),
            sql(_SELECT_BLOCK, uid, client_id),
        ]
    )
    if not stored.rows:
        # Not an advisor, no such user, or a user who never asked this advisor: alike.
        raise not_found(_NO_SUCH_CLIENT)
    if inserted.changes == 1:
        return Reply(block_view(stored.rows[0]), 201, {"location": f"/v1/advisors/me/blocks/{client_id}"})
    return Reply(block_view(stored.rows[0]))


async def list_blocks(rc: RequestContext) -> Reply:
    query = rc.parsed_query()
    limit = query.get("limit", DEFAULT_PAGE)
    before_ms, before_id = parse_time_cursor(query.get("cursor"))
    uid = rc.user_id
    advisor, page = await rc.db.batch([sql(_IS_ADVISOR, uid), sql(_PAGE, uid, before_ms, before_id, limit + 1)])
    if not advisor.rows:
        raise not_found("advisor profile (become an advisor with POST /v1/advisors)")
    rows = page.rows[:limit]
    next_cursor = None
    if len(page.rows) > limit:
        next_cursor = time_cursor(int(rows[-1]["created_at_ms"]), int(rows[-1]["client_id"]))
    return Reply({"items": [block_view(r) for r in rows], "next_cursor": next_cursor})


async def delete_block(rc: RequestContext) -> Reply:
    result = await rc.db.run(sql(_DELETE, rc.user_id, rc.params["client_id"]))
    if result.changes != 1:
        raise not_found("block")
    return Reply(None, 204)


_BLOCK_PROPS = {
    "client_id": {"type": "string"},
    "created_at": {"type": "string", "format": "date-time"},
}

SCHEMAS: dict[str, Any] = {
    "Block": {"type": "object", "required": list(_BLOCK_PROPS), "properties": _BLOCK_PROPS},
    "BlockList": page_schema("Block"),
}

ROUTES = [
    Route(
        "POST",
        "/v1/advisors/me/blocks",
        create_block,
        "Advisor: block a client who has requested a reading from you (it can no longer request one: "
        "409 advisor_unavailable); blocking again answers the block (200)",
        primary=True,
        body=BLOCK_CREATE,
        responses={201: "Block", 200: "Block"},
        tag="advisors",
    ),
    Route(
        "GET",
        "/v1/advisors/me/blocks",
        list_blocks,
        "Advisor: the clients you blocked, newest first",
        primary=True,
        query=BLOCKS_QUERY,
        responses={200: "BlockList"},
        tag="advisors",
    ),
    Route(
        "DELETE",
        "/v1/advisors/me/blocks/{client_id:id}",
        delete_block,
        "Advisor: lift a block",
        primary=True,
        responses={204: "none"},
        tag="advisors",
    ),
]
