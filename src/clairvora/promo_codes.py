"""Promo codes, the admin side: make, list, read and disable them.

A code gives either a credit amount (a promo grant at once, valid
credit_valid_days) or free minutes (a pending offer, offers.py, used by the
client's next accepted reading within credit_valid_days). It has a validity
window, a total and a per-client redemption limit.

Clients redeem them in promo_redemptions.py, where the limits are judged.
"""

from typing import Any

from . import users
from .clock import parse_rfc3339_ms, rfc3339
from .db import UniqueViolation, sql
from .errors import bad_request, conflict, not_found, unprocessable
from .idempotency import IdempotencyKey, RequestKey
from .ids import new_id
from .openapi import page_schema
from .readings import parse_time_cursor, time_cursor
from .requests import RequestContext
from .responses import Reply
from .routing import Route
from .validation import Int, Obj, Str, page_query

DEFAULT_PAGE = 25
MAX_PAGE = 100
CODE_PATTERN = "^[A-Za-z0-9-]{3,32}$"
TIME_PATTERN = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,3})?Z$"
MAX_CREDIT_CENTS = 100_000
DEFAULT_CREDIT_VALID_DAYS = 30

CODE_CREATE = Obj(
    {
        "code": Str(min_len=3, max_len=32, pattern=CODE_PATTERN, description="Letters, digits, '-'; kept upper-case."),
        "credit_cents": Int(low=1, high=MAX_CREDIT_CENTS, description="A credit amount (or free_minutes)."),
        "free_minutes": Int(low=1, high=60, description="Free minutes on the next accepted reading (or credit_cents)."),
        "max_cents_per_minute": Int(low=1, high=100_000, description="With free_minutes: a free minute's cap."),
        "credit_valid_days": Int(
            low=1,
            high=366,
            description=f"How long the credit or offer stays valid (default {DEFAULT_CREDIT_VALID_DAYS}).",
        ),
        "valid_from": Str(max_len=24, pattern=TIME_PATTERN, description="RFC 3339 UTC; default now."),
        "valid_until": Str(max_len=24, pattern=TIME_PATTERN, description="RFC 3339 UTC, after valid_from."),
        "max_redemptions": Int(low=1, high=10_000_000, description="Redemptions in all."),
        "per_client_limit": Int(low=1, high=100, description="Redemptions per client (default 1)."),
        "note": Str(max_len=500, nullable=True, description="For admins only."),
    },
    required=("code", "valid_until", "max_redemptions"),
)
CODES_QUERY = page_query(cursor_max_chars=40, max_page=MAX_PAGE, default_page=DEFAULT_PAGE)

# A code row as the views read it (the redemption reads it too: promo_redemptions.py).
CODE_COLUMNS = """id, code, credit_cents, free_minutes, max_cents_per_minute, credit_valid_days, valid_from_ms,
  valid_until_ms, max_redemptions, per_client_limit, redemptions_count, note, disabled_at_ms, created_at_ms"""


def parse_time(text: str, field: str) -> int:
    """RFC 3339 UTC ('...Z', the shape's pattern) -> ms; a date that does not exist is a 400."""
    try:
        return parse_rfc3339_ms(text)
    except ValueError:
        raise bad_request(f"'{field}' is not a date and time that exists.", field) from None


def code_view(row: dict[str, Any], now_ms: int) -> dict[str, Any]:
    if row["disabled_at_ms"] is not None:
        status = "disabled"
    elif now_ms < int(row["valid_from_ms"]):
        status = "scheduled"
    elif now_ms >= int(row["valid_until_ms"]):
        status = "expired"
    elif int(row["redemptions_count"]) >= int(row["max_redemptions"]):
        status = "exhausted"
    else:
        status = "active"
    return {
        "id": str(row["id"]),
        "code": row["code"],
        "kind": "credit" if row["credit_cents"] is not None else "free_minutes",
        "credit_cents": row["credit_cents"],
        "free_minutes": row["free_minutes"],
        "max_cents_per_minute": row["max_cents_per_minute"],
        "credit_valid_days": int(row["credit_valid_days"]),
        "valid_from": rfc3339(int(row["valid_from_ms"])),
        "valid_until": rfc3339(int(row["valid_until_ms"])),
        "max_redemptions": int(row["max_redemptions"]),
        "per_client_limit": int(row["per_client_limit"]),
        "redemptions_count": int(row["redemptions_count"]),
        "note": row["note"],
        "disabled_at": rfc3339(row["disabled_at_ms"]),
        "created_at": rfc3339(int(row["created_at_ms"])),
        "status": status,
    }


async def create_code(rc: RequestContext) -> Reply:
    # The admin lookup and any stored answer for the key in one batch (Route(caller_batch=True));
    # the role is checked before the body and the key are.
    (stored,) = await users.with_caller(rc, [RequestKey.peek_stored(rc, users.caller_sub(rc))])
    body = await rc.parsed_body()
    key = await IdempotencyKey.from_request(rc)
    if stored.rows:
        return key.replay_row(stored.rows[0])
    now_ms = key.now_ms
    if ("credit_cents" in body) == ("free_minutes" in body):
        raise unprocessable("promo_code_invalid", "Give exactly one of credit_cents and free_minutes.")
    if "max_cents_per_minute" in body and "free_minutes" not in body:
        raise unprocessable("promo_code_invalid", "max_cents_per_minute goes with free_minutes only.")
    valid_from = parse_time(body["valid_from"], "valid_from") if "valid_from" in body else now_ms
    valid_until = parse_time(body["valid_until"], "valid_until")
    if valid_until <= max(valid_from, now_ms):
        raise unprocessable("promo_code_invalid", "valid_until must be after valid_from and in the future.")
    free_minutes = body.get("free_minutes")
    row = {
        "id": new_id(),
        "code": body["code"].upper(),
        "credit_cents": body.get("credit_cents"),
        "free_minutes": free_minutes,
        "max_cents_per_minute": body.get("max_cents_per_minute", rc.settings.rate_max_cents_per_minute)
        if free_minutes
        else None,
        "credit_valid_days": body.get("credit_valid_days", DEFAULT_CREDIT_VALID_DAYS),
        "valid_from_ms": valid_from,
        "valid_until_ms": valid_until,
        "max_redemptions": body["max_redemptions"],
        "per_client_limit": body.get("per_client_limit", 1),
        "redemptions_count": 0,
        "note": body.get("note"),
        "disabled_at_ms": None,
        "created_at_ms": now_ms,
    }
    view = code_view(row, now_ms)
    try:
        # The key's record first: a code taken (the INSERT's UNIQUE) then means another request's code,
        # never a retry of this one racing it (that one fails on the record and replays).
        await rc.db.batch(
            [
                key.record_done(201, view),
                sql(
                    """INSERT INTO promo_codes (id, code, credit_cents, free_minutes, max_cents_per_minute,
                         credit_valid_days, valid_from_ms, valid_until_ms, max_redemptions, per_client_limit, note,
                         created_by_user_id, created_at_ms)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    *(row[c] for c in ("id", "code", "credit_cents", "free_minutes", "max_cents_per_minute")),
                    *(row[c] for c in ("credit_valid_days", "valid_from_ms", "valid_until_ms", "max_redemptions")),
                    row["per_client_limit"],
                    row["note"],
                    rc.user_id,
                    now_ms,
                ),
            ]
        )
    except UniqueViolation as exc:
        if IdempotencyKey.is_key_conflict(exc):
            return await key.replay(rc.db)
        if "promo_codes.code" in exc.columns:
            raise conflict("promo_code_exists", f"The code {row['code']} exists already.") from None
        raise
    return Reply(view, 201, {"location": f"/v1/admin/promo-codes/{row['id']}"})


_PAGE = f"""
SELECT {CODE_COLUMNS} FROM promo_codes
WHERE (created_at_ms, id) < (?, ?)
ORDER BY created_at_ms DESC, id DESC LIMIT ?"""  # noqa: S608 - constant text


async def list_codes(rc: RequestContext) -> Reply:
    query = rc.parsed_query()
    limit = query.get("limit", DEFAULT_PAGE)
    before_ms, before_id = parse_time_cursor(query.get("cursor"))
    result = await rc.db.all(sql(_PAGE, before_ms, before_id, limit + 1))
    rows = result.rows[:limit]
    next_cursor = time_cursor(int(rows[-1]["created_at_ms"]), int(rows[-1]["id"])) if len(result.rows) > limit else None
    now_ms = rc.clock.now_ms()
    return Reply({"items": [code_view(r, now_ms) for r in rows], "next_cursor": next_cursor})


_ONE = f"SELECT {CODE_COLUMNS} FROM promo_codes WHERE id = ?"  # noqa: S608 - constant text
# The same, read only when the caller (by Clerk sub) is an admin: the users row first
# (CROSS JOIN keeps that order), so a non-admin's 403 reads the same rows either way.
_ONE_FOR_ADMIN = (
    "SELECT c.* FROM (SELECT id FROM users WHERE clerk_user_id = ? AND is_admin = 1) g CROSS JOIN ("  # noqa: S608 - constant text
    + _ONE
    + ") c"
)


async def get_code(rc: RequestContext) -> Reply:
    row = await rc.db.first(sql(_ONE, rc.params["code_id"]))
    if row is None:
        raise not_found("promo code")
    return Reply(code_view(row, rc.clock.now_ms()))


async def disable_code(rc: RequestContext) -> Reply:
    """Disabled for good (no more redemptions; what was granted stays). Again: the code as it is."""
    # The admin lookup, any stored answer for the key and the code in one batch (Route(caller_batch=True)).
    sub = users.caller_sub(rc)
    stored, found = await users.with_caller(
        rc, [RequestKey.peek_stored(rc, sub), sql(_ONE_FOR_ADMIN, sub, rc.params["code_id"])]
    )
    key = await IdempotencyKey.from_request(rc)
    if stored.rows:
        return key.replay_row(stored.rows[0])
    if not found.rows:
        raise not_found("promo code")
    row = found.rows[0]
    after = {**row, "disabled_at_ms": row["disabled_at_ms"] if row["disabled_at_ms"] is not None else key.now_ms}
    view = code_view(after, key.now_ms)
    try:
        await rc.db.batch(
            [
                sql(
                    "UPDATE promo_codes SET disabled_at_ms = coalesce(disabled_at_ms, ?) WHERE id = ?",
                    key.now_ms,
                    row["id"],
                ),
                key.record_done(200, view),
            ]
        )
    except UniqueViolation as exc:
        if IdempotencyKey.is_key_conflict(exc):
            return await key.replay(rc.db)
        raise
    return Reply(view)


_CODE_PROPS: dict[str, Any] = {
    "id": {"type": "string"},
    "code": {"type": "string"},
    "kind": {"type": "string", "enum": ["credit", "free_minutes"]},
    "credit_cents": {"type": ["integer", "null"]},
    "free_minutes": {"type": ["integer", "null"]},
    "max_cents_per_minute": {"type": ["integer", "null"]},
    "credit_valid_days": {"type": "integer"},
    "valid_from": {"type": "string", "format": "date-time"},
    "valid_until": {"type": "string", "format": "date-time"},
    "max_redemptions": {"type": "integer"},
    "per_client_limit": {"type": "integer"},
    "redemptions_count": {"type": "integer"},
    "note": {"type": ["string", "null"]},
    "disabled_at": {"type": ["string", "null"], "format": "date-time"},
    "created_at": {"type": "string", "format": "date-time"},
    "status": {"type": "string", "enum": ["active", "scheduled", "expired", "exhausted", "disabled"]},
}

SCHEMAS: dict[str, Any] = {
    "PromoCode": {"type": "object", "required": list(_CODE_PROPS), "properties": _CODE_PROPS},
    "PromoCodeList": page_schema("PromoCode"),
}

ROUTES = [
    Route(
        "POST",
        "/v1/admin/promo-codes",
        create_code,
        "Create a promo code (a credit amount or free minutes; validity window; total and per-client limits)",
        auth="admin",
        primary=True,
        body=CODE_CREATE,
        idempotency_key=True,
        responses={201: "PromoCode"},
        problems=(409, 422),
        problem_codes={409: ("promo_code_exists",), 422: ("promo_code_invalid", "idempotency_key_reused")},
        caller_batch=True,
        tag="admin",
    ),
    Route(
        "GET",
        "/v1/admin/promo-codes",
        list_codes,
        "Promo codes, newest first",
        auth="admin",
        primary=True,
        query=CODES_QUERY,
        responses={200: "PromoCodeList"},
        tag="admin",
    ),
    Route(
        "GET",
        "/v1/admin/promo-codes/{code_id:id}",
        get_code,
        "A promo code and its redemption count",
        auth="admin",
        primary=True,
        responses={200: "PromoCode"},
        tag="admin",
    ),
    Route(
        "POST",
        "/v1/admin/promo-codes/{code_id:id}/disable",
        disable_code,
        "Disable a promo code for good (credit already granted stays)",
        auth="admin",
        primary=True,
        idempotency_key=True,
        responses={200: "PromoCode"},
        problems=(422,),
        problem_codes={422: ("idempotency_key_reused",)},
        caller_batch=True,
        tag="admin",
    ),
]
