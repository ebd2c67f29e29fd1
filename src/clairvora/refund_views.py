"""What a client sees of its refunds of unused funds (wallet_refunds.py):
the refund views, and `GET /v1/wallet/refunds` (newest first, keyset pages on
(created_at_ms, id), each refund with its parts in the same round trip) and
`GET /v1/wallet/refunds/{id}`; someone else's refund answers 404."""

from typing import Any

from .clock import rfc3339
from .db import Database, Statement, sql
from .errors import bad_request, not_found
from .openapi import page_schema
from .requests import RequestContext
from .responses import Reply
from .validation import Int, Obj, Str

DEFAULT_PAGE, MAX_PAGE = 20, 20  # a page is at most 20 refunds and their 100 parts
# The cursor is "<created_at_ms>:<id>" of the page's last refund; the pattern says so.
LIST_QUERY = Obj(
    {
        "cursor": Str(max_len=33, pattern=r"^(\d{1,16}:\d{1,16})?$", description="next_cursor from the previous page"),
        "limit": Int(low=1, high=MAX_PAGE, description=f"page size, default {DEFAULT_PAGE}"),
    }
)

# Parts in the order they were planned: the newest deposit first.
_PART_COLUMNS = """p.id, p.refund_id, p.user_id, p.payment_id, p.amount_cents, p.state, p.gateway_transaction_id,
       p.outcome, p.gateway_error_code, p.created_at_ms, p.updated_at_ms, y.gateway_transaction_id AS deposit_transaction_id"""
_REFUND = "SELECT id, amount_cents, parts, created_at_ms FROM wallet_refunds WHERE id = ? AND user_id = ?"
_PARTS_OF = f"""SELECT {_PART_COLUMNS} FROM wallet_refund_parts p JOIN payments y ON y.id = p.payment_id
WHERE p.refund_id = ? AND p.user_id = ? ORDER BY y.created_at_ms DESC, y.id DESC"""  # noqa: S608 - constant text


# The refund a pending Idempotency-Key of the caller names ({"refund_id": "<id>"},
# written with the reservation), and its parts: read with the caller lookup in
# the request's first batch, so a retry resuming a dead request reads nothing more.
_PENDING_REFUND_ID = """(SELECT CAST(json_extract(response_body, '$.refund_id') AS INTEGER) FROM idempotency_keys
  WHERE user_id = (SELECT id FROM users WHERE clerk_user_id = ?) AND idempotency_key = ? AND state = 'pending'
    AND json_valid(response_body))"""
_PENDING_REFUND = f"""SELECT id, amount_cents, parts, created_at_ms FROM wallet_refunds
WHERE user_id = (SELECT id FROM users WHERE clerk_user_id = ?) AND id = {_PENDING_REFUND_ID}"""  # noqa: S608
_PENDING_PARTS = f"""SELECT {_PART_COLUMNS} FROM wallet_refund_parts p JOIN payments y ON y.id = p.payment_id
WHERE p.user_id = (SELECT id FROM users WHERE clerk_user_id = ?) AND p.refund_id = {_PENDING_REFUND_ID}
ORDER BY y.created_at_ms DESC, y.id DESC"""  # noqa: S608 - constant text


def pending_refund_statements(caller_sub: str, idempotency_key: str) -> list[Statement]:
    """[the refund, its parts] named by the caller's pending key (none for any other key)."""
    return [
        sql(_PENDING_REFUND, caller_sub, caller_sub, idempotency_key),
        sql(_PENDING_PARTS, caller_sub, caller_sub, idempotency_key),
    ]


def part_view(part: dict[str, Any]) -> dict[str, Any]:
    returned = part["state"] == "returned"
    return {
        "id": str(part["id"]),
        "deposit_id": str(part["payment_id"]),
        "amount_cents": int(part["amount_cents"]),
        "status": part["state"],
        "gateway_transaction_id": part.get("gateway_transaction_id"),
        "failure_code": (part.get("gateway_error_code") or part.get("outcome")) if returned else None,
    }


def refund_view(refund: dict[str, Any], parts: list[dict[str, Any]]) -> dict[str, Any]:
    total = {
        s: sum(int(p["amount_cents"]) for p in parts if p["state"] == s) for s in ("settled", "returned", "in_transit")
    }
    if total["in_transit"]:
        status = "processing"
    elif not total["returned"]:
        status = "completed"
    elif not total["settled"]:
        status = "failed"
    else:
        status = "partially_completed"
    return {
        "id": str(refund["id"]),
        "amount_cents": int(refund["amount_cents"]),
        "status": status,
        "refunded_cents": total["settled"],
        "returned_cents": total["returned"],
        "in_transit_cents": total["in_transit"],
        "parts": [part_view(p) for p in parts],
        "created_at": rfc3339(refund["created_at_ms"]),
    }


async def read_refund(db: Database, user_id: int, refund_id: int) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    found, parts, wallet = await db.batch(
        [
            sql(_REFUND, refund_id, user_id),
            sql(_PARTS_OF, refund_id, user_id),
            sql("SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet'", user_id),
        ]
    )
    if not found.rows:
        raise not_found("refund")
    return found.rows[0], parts.rows, int(wallet.rows[0]["balance_cents"]) if wallet.rows else 0


NO_CURSOR = 2**52  # above any time or id; larger ints cross to JS as BigInt, which D1 refuses


def _cursor(raw: str | None) -> tuple[int, int]:
    """(created_at_ms, id) of the last refund seen (the query shape checked the form)."""
    if not raw:
        return NO_CURSOR, NO_CURSOR
    at, _, rid = raw.partition(":")
    if not (at.isascii() and at.isdigit() and rid.isascii() and rid.isdigit()):
        raise bad_request("'cursor' is not a cursor this API returned.", "cursor")
    return min(int(at), NO_CURSOR), min(int(rid), NO_CURSOR)


def page_statements(user_id: int, before_ms: int, before_id: int, limit: int) -> list[Statement]:
    """[up to limit + 1 of the user's refunds before the cursor, newest first; the parts of the first `limit`]
    (the list's page, and the export's section from NO_CURSOR)."""
    page = """SELECT id FROM wallet_refunds WHERE user_id = ? AND (created_at_ms, id) < (?, ?)
              ORDER BY created_at_ms DESC, id DESC LIMIT ?"""
    return [
        sql(
            """SELECT id, amount_cents, parts, created_at_ms FROM wallet_refunds
               WHERE user_id = ? AND (created_at_ms, id) < (?, ?) ORDER BY created_at_ms DESC, id DESC LIMIT ?""",
            user_id,
            before_ms,
            before_id,
            limit + 1,
        ),
        sql(
            f"""SELECT {_PART_COLUMNS} FROM wallet_refund_parts p JOIN payments y ON y.id = p.payment_id
                WHERE p.user_id = ? AND p.refund_id IN ({page}) ORDER BY y.created_at_ms DESC, y.id DESC""",  # noqa: S608
            user_id,
            user_id,
            before_ms,
            before_id,
            limit,
        ),
    ]


def views(refunds: list[dict[str, Any]], parts: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The first `limit` refunds of page_statements' answer, each with its parts."""
    by_refund: dict[int, list[dict[str, Any]]] = {}
    for p in parts:
        by_refund.setdefault(int(p["refund_id"]), []).append(p)
    return [refund_view(r, by_refund.get(int(r["id"]), [])) for r in refunds[:limit]]


async def list_refunds(rc: RequestContext) -> Reply:
    query = rc.parsed_query()
    limit = query.get("limit", DEFAULT_PAGE)
    at, rid = _cursor(query.get("cursor"))
    refunds, parts = await rc.db.batch(page_statements(rc.user_id, at, rid, limit))
    rows = refunds.rows[:limit]
    items = views(refunds.rows, parts.rows, limit)
    more = len(refunds.rows) > limit
    next_cursor = f"{rows[-1]['created_at_ms']}:{rows[-1]['id']}" if more and rows else None
    return Reply({"items": items, "next_cursor": next_cursor})


async def get_refund(rc: RequestContext) -> Reply:
    refund, parts, _wallet = await read_refund(rc.db, rc.user_id, rc.params["refund_id"])
    return Reply(refund_view(refund, parts))


_PART_SCHEMA = {
    "type": "object",
    "required": ["id", "deposit_id", "amount_cents", "status", "gateway_transaction_id", "failure_code"],
    "properties": {
        "id": {"type": "string"},
        "deposit_id": {"type": "string", "description": "the deposit (payment) refunded"},
        "amount_cents": {"type": "integer", "minimum": 1},
        "status": {
            "type": "string",
            "enum": ["in_transit", "settled", "returned"],
            "description": "settled: refunded to the card; returned: the gateway refused, the money is back in "
            "the wallet; in_transit: the gateway's answer is awaited",
        },
        "gateway_transaction_id": {"type": ["string", "null"], "description": "the refund's transaction"},
        "failure_code": {"type": ["string", "null"], "description": "why a returned part was refused"},
    },
}

SCHEMAS: dict[str, Any] = {
    "WalletRefund": {
        "type": "object",
        "required": [
            "id",
            "amount_cents",
            "status",
            "refunded_cents",
            "returned_cents",
            "in_transit_cents",
            "parts",
            "created_at",
        ],
        "properties": {
            "id": {"type": "string"},
            "amount_cents": {"type": "integer", "minimum": 1},
            "status": {"type": "string", "enum": ["processing", "completed", "partially_completed", "failed"]},
            "refunded_cents": {"type": "integer", "minimum": 0},
            "returned_cents": {"type": "integer", "minimum": 0},
            "in_transit_cents": {"type": "integer", "minimum": 0},
            "parts": {"type": "array", "items": _PART_SCHEMA, "minItems": 1, "maxItems": 5},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "WalletRefundResult": {
        "type": "object",
        "required": ["refund", "wallet"],
        "properties": {
            "refund": {"$ref": "#/components/schemas/WalletRefund"},
            "wallet": {"$ref": "#/components/schemas/Wallet"},
        },
    },
    "WalletRefundPage": page_schema("WalletRefund"),
}
