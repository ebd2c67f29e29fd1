"""An advisor's earnings: the balance of their earnings account (O(1)) and its
ledger entries, newest first, keyset-paged on the per-account sequence."""

from typing import Any

from . import ledger, ledger_history
from .clock import rfc3339
from .db import sql
from .errors import bad_request, not_found
from .requests import RequestContext
from .responses import Reply
from .routing import Route
from .validation import page_query

DEFAULT_PAGE = 25
MAX_PAGE = 100

_ACCOUNT = "SELECT id, balance_cents, currency FROM accounts WHERE owner_user_id = ? AND kind = 'advisor_earnings'"

EARNINGS_QUERY = page_query(cursor_max_chars=16, max_page=MAX_PAGE, default_page=DEFAULT_PAGE)


def entry_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "kind": row["kind"],
        "amount_cents": int(row["amount_cents"]),
        "balance_after_cents": int(row["balance_after_cents"]),
        "reading_id": str(row["reference_id"]) if row["reference_type"] == "reading" else None,
        "created_at": rfc3339(row["created_at_ms"]),
    }


async def get_earnings(rc: RequestContext) -> Reply:
    query = rc.parsed_query()
    limit = query.get("limit", DEFAULT_PAGE)
    raw = query.get("cursor")
    if raw is not None and not (raw.isascii() and raw.isdigit()):
        raise bad_request("'cursor' is not a cursor this API returned.", "cursor", code="invalid_cursor")
    before = min(int(raw), ledger.NO_CURSOR) if raw is not None else ledger.NO_CURSOR
    # The balance and the page in one round trip (the page finds the account itself).
    accounts, result, parts = await rc.db.batch(
        [
            sql(_ACCOUNT, rc.user_id),
            ledger.own_entries_page(rc.user_id, "advisor_earnings", before, limit + 1),
            ledger_history.closed_part(rc.user_id, "advisor_earnings", before),
        ]
    )
    if not accounts.rows:
        raise not_found("earnings account (become an advisor with POST /v1/advisors)")
    account = accounts.rows[0]
    rows, next_cursor = await ledger_history.page(rc.env, result.rows, parts.rows, before, limit)
    return Reply(
        {
            "balance_cents": int(account["balance_cents"]),
            "currency": account["currency"],
            "items": [entry_view(r) for r in rows],
            "next_cursor": next_cursor,
        }
    )


_ENTRY_PROPS = {
    "id": {"type": "string"},
    "kind": {
        "type": "string",
        "enum": ["reading_charge", "reading_refund", "adjustment", "clawback", "earnings_clearance"],
    },
    "amount_cents": {"type": "integer", "description": "signed: + earned, - reversed"},
    "balance_after_cents": {"type": "integer"},
    "reading_id": {"type": ["string", "null"]},
    "created_at": {"type": "string", "format": "date-time"},
}

SCHEMAS: dict[str, Any] = {
    "EarningsEntry": {"type": "object", "required": list(_ENTRY_PROPS), "properties": _ENTRY_PROPS},
    "Earnings": {
        "type": "object",
        "required": ["balance_cents", "currency", "items", "next_cursor"],
        "properties": {
            "balance_cents": {"type": "integer"},
            "currency": {"type": "string", "enum": ["USD"]},
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/EarningsEntry"}},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
}

ROUTES = [
    Route(
        "GET",
        "/v1/advisors/me/earnings",
        get_earnings,
        "Advisor: earnings balance and entries, newest first",
        primary=True,
        query=EARNINGS_QUERY,
        responses={200: "Earnings"},
        tag="advisors",
    ),
]
