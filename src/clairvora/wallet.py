"""The client's wallet: its balance and its own ledger entries.

`GET /v1/wallet` reads one account row (O(1), however long the ledger is).
`held_cents` is always 0: this design has no holds. A reading charges each
minute when it begins (one balanced transfer per minute), so there is never
money reserved but not yet moved.

`available_cents` may be below zero only after the gateway reversed a deposit
that had already been spent (a `deposit_reversal` transfer, see webhooks.py);
such a client cannot start a reading, because requesting one needs funds for
the first minute (a positive balance).

`GET /v1/wallet` also shows the client's promotional credit (promo.py): what is
valid now (`promo_cents`, spent before the wallet, never refunded to a card or
paid out) and when the next of it expires; the same read, no extra round trip.

Both routes are `primary=True` and honour the caller's bookmark, so a client
sees its deposit in the very next request.
"""

from typing import Any, get_args

from . import ledger, ledger_history, promo
from .clock import rfc3339
from .db import Database, sql
from .errors import bad_request, not_found
from .openapi import page_schema
from .requests import RequestContext
from .responses import Reply
from .routing import Route
from .validation import page_query

MAX_PAGE = 100
DEFAULT_PAGE = 25
CURRENCY = "USD"

_SELECT_WALLET = f"""
SELECT id, balance_cents, currency, {promo.BALANCE_COLUMNS}
FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet'"""  # noqa: S608 - constant text


async def wallet_view(db: Database, user_id: int, now_ms: int) -> dict[str, Any]:
    """The wallet and the promo credit valid at `now_ms`."""
    row = await db.first(sql(_SELECT_WALLET, user_id, now_ms, user_id, now_ms, user_id))
    if row is None:  # users.ensure_user creates the wallet with the user
        raise not_found("wallet")
    return {**wallet_from_row(row), **promo.balance_view(row)}


def wallet_from_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"available_cents": int(row["balance_cents"]), "held_cents": 0, "currency": row["currency"]}


async def get_wallet(rc: RequestContext) -> Reply:
    return Reply(await wallet_view(rc.db, rc.user_id, rc.clock.now_ms()))


def _parse_cursor(raw: str | None) -> int:
    if raw is None or raw == "":
        return ledger.NO_CURSOR
    if not raw.isascii() or not raw.isdigit() or len(raw) > 15:
        raise bad_request("'cursor' is not a cursor this API returned.", "cursor")
    return min(int(raw), ledger.NO_CURSOR)


def entry_view(row: dict[str, Any]) -> dict[str, Any]:
    reference = None
    if row["reference_type"] is not None:
        reference = {"type": row["reference_type"], "id": str(row["reference_id"])}
    return {
        "id": str(row["id"]),
        "kind": row["kind"],
        "amount_cents": int(row["amount_cents"]),
        "balance_after_cents": int(row["balance_after_cents"]),
        "reference": reference,
        "created_at": rfc3339(row["created_at_ms"]),
    }


async def list_transactions(rc: RequestContext) -> Reply:
    query = rc.parsed_query()
    limit = query.get("limit", DEFAULT_PAGE)
    before = _parse_cursor(query.get("cursor"))
    result, parts = await rc.db.batch(
        [
            ledger.own_entries_page(rc.user_id, "client_wallet", before, limit + 1),
            ledger_history.closed_part(rc.user_id, "client_wallet", before),
        ]
    )
    rows, next_cursor = await ledger_history.page(rc.env, result.rows, parts.rows, before, limit)
    return Reply({"items": [entry_view(r) for r in rows], "next_cursor": next_cursor})


TRANSACTIONS_QUERY = page_query(cursor_max_chars=15, max_page=MAX_PAGE, default_page=DEFAULT_PAGE, cursor_min_chars=0)

SCHEMAS: dict[str, Any] = {
    "Wallet": {
        "type": "object",
        "required": ["available_cents", "held_cents", "currency"],
        "properties": {
            "available_cents": {
                "type": "integer",
                "description": "Below zero only after a gateway reversal or a chargeback of a spent deposit.",
            },
            "held_cents": {"type": "integer", "description": "Always 0: this design has no holds."},
            "currency": {"type": "string", "enum": [CURRENCY]},
        },
    },
    "WalletBalances": {
        "type": "object",
        "required": ["available_cents", "held_cents", "currency", *promo.BALANCE_SCHEMA],
        "properties": {
            "available_cents": {
                "type": "integer",
                "description": "Below zero only after a gateway reversal of a spent deposit.",
            },
            "held_cents": {"type": "integer", "description": "Always 0: this design has no holds."},
            "currency": {"type": "string", "enum": [CURRENCY]},
            **promo.BALANCE_SCHEMA,
        },
    },
    "WalletTransaction": {
        "type": "object",
        "required": ["id", "kind", "amount_cents", "balance_after_cents", "reference", "created_at"],
        "properties": {
            "id": {"type": "string"},
            # Every transfer kind (ledger.py): refunds of unused funds and chargebacks reach wallets too.
            "kind": {"type": "string", "enum": list(get_args(ledger.TransferKind))},
            "amount_cents": {"type": "integer", "description": "signed: + credit, - debit"},
            "balance_after_cents": {"type": "integer"},
            "reference": {
                "type": ["object", "null"],
                "properties": {
                    "type": {"type": "string", "enum": list(get_args(ledger.ReferenceType))},
                    "id": {"type": "string"},
                },
            },
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "WalletTransactionPage": page_schema("WalletTransaction"),
}

ROUTES = [
    Route(
        "GET",
        "/v1/wallet",
        get_wallet,
        "Your wallet balance and your promo credit",
        primary=True,
        responses={200: "WalletBalances"},
        tag="wallet",
    ),
    Route(
        "GET",
        "/v1/wallet/transactions",
        list_transactions,
        "Your wallet's ledger entries, newest first",
        primary=True,
        query=TRANSACTIONS_QUERY,
        responses={200: "WalletTransactionPage"},
        tag="wallet",
    ),
]
