"""Readings as the API shows them, and the caller's reading.

Here: the views (reading_view; billed_view adds the client's balance, null for
the advisor), the participant-scoped read every reading route starts from
(caller_reading: the row preload_participant sent with the caller lookup, or
load_participant), `GET /v1/readings` and `GET /v1/readings/{id}`, the time
cursors other lists share, and the OpenAPI schemas. The request is in
reading_requests.py, accept/decline/cancel/heartbeat/end in
reading_transitions.py (billing in billing.py), the route table in
reading_routes.py.

Authorization: every query names the caller in its WHERE clause; a reading
that is not the caller's answers 404 (no existence oracle). Nothing the
advisor receives depends on the client's wallet (billing.balance_view).
"""

from typing import Any

from . import billing
from .clock import rfc3339
from .db import Database, Statement, sql
from .errors import Problem, bad_request, not_found
from .openapi import page_schema
from .requests import RequestContext
from .responses import Reply
from .validation import page_query

DEFAULT_PAGE = 20
MAX_PAGE = 100

SELECT_FOR_PARTICIPANT = billing.SELECT_READING + " AND (r.client_id = ? OR r.advisor_id = ?)"
# The same read before the caller's id is known: the caller named by its Clerk
# `sub` (UNIQUE index: one more row read). Sent with the caller lookup.
_SELECT_FOR_SUB = (
    billing.SELECT_READING  # noqa: S608 - constant text, `?` placeholders only
    + " AND (SELECT id FROM users WHERE clerk_user_id = ?) IN (r.client_id, r.advisor_id)"
)


def reading_view(row: dict[str, Any], viewer_id: int) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "client_id": str(row["client_id"]),
        "advisor_id": str(row["advisor_id"]),
        "role": "client" if int(row["client_id"]) == viewer_id else "advisor",
        "channel": row["channel"],
        "status": row["status"],
        "rate_cents_per_minute": int(row["rate_cents_per_minute"]),
        "billing_period_seconds": int(row["billing_period_seconds"]),
        "billed_minutes": int(row["billed_minutes"]),
        "billed_cents": int(row["billed_minutes"]) * int(row["rate_cents_per_minute"]),
        "end_reason": row["end_reason"],
        "requested_at": rfc3339(row["requested_at_ms"]),
        "accepted_at": rfc3339(row["accepted_at_ms"]),
        "ended_at": rfc3339(row["ended_at_ms"]),
        "last_heartbeat_at": rfc3339(row["last_heartbeat_at_ms"]),
        "client_heartbeat_at": rfc3339(row["client_heartbeat_at_ms"]),
        "advisor_heartbeat_at": rfc3339(row["advisor_heartbeat_at_ms"]),
        "heartbeat_timeout_seconds": int(row["heartbeat_timeout_seconds"]),
        "silent_party": row["silent_party"],
        "version": int(row["version"]),
    }


def billed_view(row: dict[str, Any], viewer_id: int, now_ms: int) -> dict[str, Any]:
    return {**reading_view(row, viewer_id), **billing.balance_view(row, viewer_id, now_ms)}


async def load_participant(db: Database, reading_id: int, user_id: int) -> dict[str, Any]:
    row = await db.first(sql(SELECT_FOR_PARTICIPANT, reading_id, user_id, user_id))
    if row is None:
        raise not_found("reading")
    return row


def preload_participant(params: dict[str, Any], caller_sub: str) -> Statement:
    """Route.preload of the routes whose first read is the caller's reading."""
    return sql(_SELECT_FOR_SUB, params["reading_id"], caller_sub)


async def caller_reading(rc: RequestContext) -> dict[str, Any]:
    """The reading of the path, if the caller takes part in it (else 404): the
    row read with the caller lookup when the route preloads it, else a read."""
    rows = rc.take_preloaded()
    if rows is None:
        return await load_participant(rc.db, rc.params["reading_id"], rc.user_id)
    if not rows:
        raise not_found("reading")
    assert len(rows) == 1 and int(rows[0]["id"]) == rc.params["reading_id"]
    assert rc.user_id in (int(rows[0]["client_id"]), int(rows[0]["advisor_id"])), "preload scoped to the caller"
    return rows[0]


def not_in_status(row: dict[str, Any], wanted: str, action: str) -> Problem:
    return Problem(
        409,
        "reading_illegal_transition",
        "Conflict",
        f"Cannot {action} a reading that is {row['status']} (it must be {wanted}).",
        extra={"reading_status": row["status"]},
    )


# --- reads ------------------------------------------------------------------


async def get_reading(rc: RequestContext) -> Reply:
    row = await caller_reading(rc)
    return Reply(billed_view(row, rc.user_id, rc.clock.now_ms()))


# Newest first over both roles: two index walks (client's, advisor's), each
# already limited, merged. The cursor is (requested_at_ms, id) of the last row.
_LIST = f"""
SELECT * FROM (SELECT {billing.READING_COLUMNS} FROM readings r
               WHERE r.client_id = ? AND (r.requested_at_ms, r.id) < (?, ?)
               ORDER BY r.requested_at_ms DESC, r.id DESC LIMIT ?)
UNION ALL
SELECT * FROM (SELECT {billing.READING_COLUMNS} FROM readings r
               WHERE r.advisor_id = ? AND (r.requested_at_ms, r.id) < (?, ?)
               ORDER BY r.requested_at_ms DESC, r.id DESC LIMIT ?)
ORDER BY requested_at_ms DESC, id DESC LIMIT ?"""  # noqa: S608 - constant text

READING_LIST_QUERY = page_query(cursor_max_chars=40, max_page=MAX_PAGE, default_page=DEFAULT_PAGE)


# Above every time and id. (2**53 - 1 itself reaches D1 as a BigInt, which it refuses.)
_NO_CURSOR = 2**52


def parse_time_cursor(raw: str | None) -> tuple[int, int]:
    """'<ms>.<id>' -> (ms, id); no cursor -> past every row."""
    if raw is None:
        return _NO_CURSOR, _NO_CURSOR
    ms, _, ident = raw.partition(".")
    if not (ms.isascii() and ms.isdigit() and ident.isascii() and ident.isdigit()) or len(ms) > 16 or len(ident) > 16:
        raise bad_request("'cursor' is not a cursor this API returned.", "cursor", code="invalid_cursor")
    return min(int(ms), _NO_CURSOR), min(int(ident), _NO_CURSOR)


def time_cursor(ms: int, ident: int) -> str:
    return f"{ms}.{ident}"


async def list_readings(rc: RequestContext) -> Reply:
    query = rc.parsed_query()
    limit = query.get("limit", DEFAULT_PAGE)
    before_ms, before_id = parse_time_cursor(query.get("cursor"))
    uid = rc.user_id
    result = await rc.db.all(
        sql(_LIST, uid, before_ms, before_id, limit + 1, uid, before_ms, before_id, limit + 1, limit + 1)
    )
    rows = result.rows[:limit]
    next_cursor = None
    if len(result.rows) > limit:
        next_cursor = time_cursor(int(rows[-1]["requested_at_ms"]), int(rows[-1]["id"]))
    return Reply({"items": [reading_view(r, uid) for r in rows], "next_cursor": next_cursor})


_READING_PROPS: dict[str, Any] = {
    "id": {"type": "string"},
    "client_id": {"type": "string"},
    "advisor_id": {"type": "string"},
    "role": {"type": "string", "enum": ["client", "advisor"], "description": "The caller's part in the reading."},
    "channel": {"type": "string", "enum": ["chat"]},
    "status": {"type": "string", "enum": ["requested", "active", "ended", "declined", "cancelled", "expired"]},
    "rate_cents_per_minute": {"type": "integer", "description": "Fixed when the reading was requested."},
    "billing_period_seconds": {"type": "integer"},
    "billed_minutes": {"type": "integer"},
    "billed_cents": {"type": "integer"},
    "end_reason": {
        "type": ["string", "null"],
        "enum": ["client_ended", "advisor_ended", "insufficient_funds", "heartbeat_timeout", None],
    },
    "requested_at": {"type": "string", "format": "date-time"},
    "accepted_at": {"type": ["string", "null"], "format": "date-time"},
    "ended_at": {"type": ["string", "null"], "format": "date-time"},
    "last_heartbeat_at": {
        "type": ["string", "null"],
        "format": "date-time",
        "description": "The latest heartbeat from either side.",
    },
    "client_heartbeat_at": {
        "type": ["string", "null"],
        "format": "date-time",
        "description": "The client's last heartbeat (null: none since the accept).",
    },
    "advisor_heartbeat_at": {
        "type": ["string", "null"],
        "format": "date-time",
        "description": "The advisor's last heartbeat (null: none since the accept).",
    },
    "heartbeat_timeout_seconds": {
        "type": "integer",
        "description": "Fixed when the reading was requested. A side silent for longer ends the reading at its last "
        "heartbeat; nothing begun after that is billed.",
    },
    "silent_party": {
        "type": ["string", "null"],
        "enum": ["client", "advisor", "both", None],
        "description": "Who went silent, when end_reason is heartbeat_timeout.",
    },
    "version": {"type": "integer"},
}

SCHEMAS: dict[str, Any] = {
    "Reading": {"type": "object", "required": list(_READING_PROPS), "properties": _READING_PROPS},
    "ReadingBilling": {
        "type": "object",
        "required": [*_READING_PROPS, "balance_cents", "promo_cents", "minutes_left", "low_balance"],
        "properties": {
            **_READING_PROPS,
            "balance_cents": {
                "type": ["integer", "null"],
                "description": "The client's wallet balance (null when the advisor asks).",
            },
            "promo_cents": {
                "type": ["integer", "null"],
                "description": "The client's valid promo credit, spent before the wallet (null when the advisor asks).",
            },
            "minutes_left": {
                "type": ["integer", "null"],
                "description": "Further minutes the client's promo credit and wallet can pay (null when the advisor "
                "asks).",
            },
            "low_balance": {
                "type": ["boolean", "null"],
                "description": "True when fewer than two minutes remain (null when the advisor asks).",
            },
        },
    },
    "ReadingList": page_schema("Reading"),
}
