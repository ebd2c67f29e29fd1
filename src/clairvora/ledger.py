"""Accounts, transfers and entries: the double-entry, append-only ledger.

A transfer is a list of statements meant for ONE `db.batch` (one D1 round
trip), together with whatever else the money movement changes:

    INSERT transfer (posted = 0)
    INSERT entry per leg  -- INSERT ... SELECT from the account row, so the
                          -- balance-after and sequence come from SQL
    UPDATE transfer SET posted = 1   -- trigger: >= 2 entries, sum = 0

The triggers in migrations/0002_ledger.sql refuse a wallet overdraft
(`insufficient_funds`), a gap in sequences, an unbalanced transfer and any
update or delete of an entry; a refusal aborts the whole batch. The transfer
key is UNIQUE, so repeating a movement (same key) also aborts its batch.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .db import Database, Param, Statement, sql

AccountKind = Literal[
    "client_wallet",
    "client_promo",
    "advisor_earnings",
    "advisor_cleared",
    "platform_revenue",
    "gateway_clearing",
    "platform_promotions",
    "payouts_in_transit",
    "payout_clearing",
    "refunds_in_transit",
]
TransferKind = Literal[
    "deposit",
    "deposit_reversal",
    "reading_charge",
    "reading_refund",
    "adjustment",
    "promo_grant",
    "promo_expiry",
    "satisfaction_credit",
    "clawback",
    "wallet_refund",
    "wallet_refund_settlement",
    "wallet_refund_return",
    "chargeback",
    "chargeback_reversal",
    "earnings_clearance",
    "payout",
    "payout_settlement",
    "payout_return",
]
ReferenceType = Literal[
    "payment",
    "reading",
    "webhook_event",
    "user",
    "promo_code",
    "promo_grant",
    "satisfaction_claim",
    "wallet_refund",
    "chargeback",
    "earnings_clearance",
    "payout",
]

PLATFORM_REVENUE_ACCOUNT_ID = 1
GATEWAY_CLEARING_ACCOUNT_ID = 2
PLATFORM_PROMOTIONS_ACCOUNT_ID = 3
PAYOUTS_IN_TRANSIT_ACCOUNT_ID = 4
PAYOUT_CLEARING_ACCOUNT_ID = 5
REFUNDS_IN_TRANSIT_ACCOUNT_ID = 6
MAX_LEGS = 8
MAX_TRANSFER_CENTS = 10_000_000_00  # $10M: far above any real movement, far below 2**53


@dataclass(frozen=True, slots=True)
class AccountRef:
    """A fixed account id, or the account of `kind` owned by a user."""

    account_id: int | None = None
    owner_user_id: int | None = None
    kind: AccountKind | None = None


PLATFORM_REVENUE = AccountRef(account_id=PLATFORM_REVENUE_ACCOUNT_ID)
GATEWAY_CLEARING = AccountRef(account_id=GATEWAY_CLEARING_ACCOUNT_ID)
PLATFORM_PROMOTIONS = AccountRef(account_id=PLATFORM_PROMOTIONS_ACCOUNT_ID)
PAYOUTS_IN_TRANSIT = AccountRef(account_id=PAYOUTS_IN_TRANSIT_ACCOUNT_ID)
PAYOUT_CLEARING = AccountRef(account_id=PAYOUT_CLEARING_ACCOUNT_ID)
REFUNDS_IN_TRANSIT = AccountRef(account_id=REFUNDS_IN_TRANSIT_ACCOUNT_ID)


def wallet_of(user_id: int) -> AccountRef:
    return AccountRef(owner_user_id=user_id, kind="client_wallet")


def earnings_of(user_id: int) -> AccountRef:
    return AccountRef(owner_user_id=user_id, kind="advisor_earnings")


def promo_of(user_id: int) -> AccountRef:
    return AccountRef(owner_user_id=user_id, kind="client_promo")


@dataclass(frozen=True, slots=True)
class Leg:
    account: AccountRef
    amount_cents: int


_INSERT_ENTRY_BY_ID = """
INSERT INTO ledger_entries (transfer_id, account_id, amount_cents, balance_after_cents, sequence, created_at_ms)
SELECT ?, a.id, ?, a.balance_cents + ?, a.last_sequence + 1, ?
FROM accounts a WHERE a.id = ?"""

_INSERT_ENTRY_BY_OWNER = """
INSERT INTO ledger_entries (transfer_id, account_id, amount_cents, balance_after_cents, sequence, created_at_ms)
SELECT ?, a.id, ?, a.balance_cents + ?, a.last_sequence + 1, ?
FROM accounts a WHERE a.owner_user_id = ? AND a.kind = ?"""


def transfer(
    *,
    transfer_id: int,
    key: str,
    kind: TransferKind,
    legs: list[Leg],
    now_ms: int,
    reference_type: ReferenceType | None = None,
    reference_id: int | None = None,
    requested_by_user_id: int | None = None,
    before_entries: Sequence[Statement] = (),
) -> list[Statement]:
    """The statements of one balanced transfer, for a single batch.
    `before_entries` go right after the transfer row: rows that reference the
    transfer and must be in place when its entries and its posting are judged
    (a refund row, promo grant rows: migrations 0010, 0091)."""
    assert 2 <= len(legs) <= MAX_LEGS, "a transfer has 2..8 legs"
    assert all(leg.amount_cents != 0 for leg in legs), "no zero legs"
    assert all(abs(leg.amount_cents) <= MAX_TRANSFER_CENTS for leg in legs)
    assert sum(leg.amount_cents for leg in legs) == 0, "a transfer sums to zero"
    assert 1 <= len(key) <= 200
    statements = [
        sql(
            """INSERT INTO transfers (id, transfer_key, kind, reference_type, reference_id,
                                      requested_by_user_id, created_at_ms)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            transfer_id,
            key,
            kind,
            reference_type,
            reference_id,
            requested_by_user_id,
            now_ms,
        ),
        *before_entries,
    ]
    for leg in legs:
        ref = leg.account
        if ref.account_id is not None:
            statements.append(
                sql(_INSERT_ENTRY_BY_ID, transfer_id, leg.amount_cents, leg.amount_cents, now_ms, ref.account_id)
            )
        else:
            assert ref.owner_user_id is not None and ref.kind is not None
            statements.append(
                sql(
                    _INSERT_ENTRY_BY_OWNER,
                    transfer_id,
                    leg.amount_cents,
                    leg.amount_cents,
                    now_ms,
                    ref.owner_user_id,
                    ref.kind,
                )
            )
    statements.append(sql("UPDATE transfers SET posted = 1 WHERE id = ?", transfer_id))
    return statements


@dataclass(frozen=True, slots=True)
class FromRow:
    """Where a transfer's amount comes from when D1 computes it inside the batch:
    `query` (constant SQL, `params` its values) selects `amount_cents` and
    `owner_user_id` from at most one row, written by an earlier statement of the
    same batch (e.g. a payout whose amount an INSERT ... SELECT took from a balance).
    No row, because that statement found nothing to do: no transfer, no entries,
    and the posting changes nothing, so the batch goes on with its other work."""

    query: str
    params: tuple[Param, ...]


_TRANSFER_FROM_ROW = """
INSERT INTO transfers (id, transfer_key, kind, reference_type, reference_id, requested_by_user_id, created_at_ms)
SELECT ?, ?, ?, ?, ?, CASE WHEN ? THEN r.owner_user_id END, ? FROM ({source}) r WHERE r.amount_cents > 0"""

# The account is a fixed one (`a.id = ?`) or the row owner's account of a kind.
_ENTRY_FROM_ROW = """
INSERT INTO ledger_entries (transfer_id, account_id, amount_cents, balance_after_cents, sequence, created_at_ms)
SELECT t.id, a.id, ? * r.amount_cents, a.balance_cents + ? * r.amount_cents, a.last_sequence + 1, ?
FROM transfers t, ({source}) r JOIN accounts a ON {account}
WHERE t.id = ?"""
_BY_ID = "a.id = ?"
_OF_ROW_OWNER = "a.owner_user_id = r.owner_user_id AND a.kind = ?"


def transfer_from_row(
    *,
    transfer_id: int,
    key: str,
    kind: TransferKind,
    source: FromRow,
    legs: Sequence[tuple[AccountRef, int]],
    now_ms: int,
    reference_type: ReferenceType | None = None,
    reference_id: int | None = None,
    requested_by_owner: bool = False,
) -> list[Statement]:
    """transfer(), with the amount read by D1 from `source` in the batch (so a
    movement whose amount depends on a balance needs no read before it). Each leg
    is (account, +1 or -1): the account moves by that sign times the amount; an
    AccountRef with a `kind` and no owner is the account of that kind owned by the
    row's `owner_user_id`. The entry triggers judge each entry as transfer()'s."""
    assert 2 <= len(legs) <= MAX_LEGS and all(sign in (1, -1) for _a, sign in legs), "2..8 legs of +1/-1"
    assert sum(sign for _a, sign in legs) == 0, "a transfer sums to zero"
    assert 1 <= len(key) <= 200
    statements = [
        sql(
            _TRANSFER_FROM_ROW.format(source=source.query),
            transfer_id,
            key,
            kind,
            reference_type,
            reference_id,
            requested_by_owner,
            now_ms,
            *source.params,
        )
    ]
    for ref, sign in legs:
        where: tuple[Param, ...]
        if ref.account_id is not None:
            account, where = _BY_ID, (ref.account_id,)
        else:
            assert ref.owner_user_id is None and ref.kind is not None, "a row owner's account: kind only"
            account, where = _OF_ROW_OWNER, (ref.kind,)
        statements.append(
            sql(
                _ENTRY_FROM_ROW.format(source=source.query, account=account),
                sign,
                sign,
                now_ms,
                *source.params,
                *where,
                transfer_id,
            )
        )
    statements.append(sql("UPDATE transfers SET posted = 1 WHERE id = ?", transfer_id))
    return statements


# Keyset pagination on the per-account sequence (gap-free, unique per account,
# indexed by UNIQUE (account_id, sequence)): a page costs `limit` entry rows.
# The account is found by owner and kind inside the statement, so a page needs
# no read of the account first.
_OWN_ENTRIES_PAGE = """
SELECT e.id, e.sequence, e.amount_cents, e.balance_after_cents, e.created_at_ms,
       t.kind, t.reference_type, t.reference_id
FROM ledger_entries e JOIN transfers t ON t.id = e.transfer_id
WHERE e.account_id = (SELECT id FROM accounts WHERE owner_user_id = ? AND kind = ?)
  AND e.sequence < ?
ORDER BY e.sequence DESC
LIMIT ?"""
NO_CURSOR = 2**52  # above any sequence; larger ints cross to JS as BigInt, which D1 refuses
OwnedAccountKind = Literal["client_wallet", "advisor_earnings"]


def own_entries_page(owner_user_id: int, kind: OwnedAccountKind, before_sequence: int, rows: int) -> Statement:
    """Entries of the caller's own account of `kind`, newest first, below a sequence."""
    assert kind in ("client_wallet", "advisor_earnings") and 0 < rows <= 101
    return sql(_OWN_ENTRIES_PAGE, owner_user_id, kind, before_sequence, rows)


def split_rate(rate_cents_per_minute: int, platform_fee_bps: int) -> tuple[int, int]:
    """(advisor_cents, platform_cents) for one minute; the parts sum exactly to the rate.
    The platform's part rounds down, so rounding always favours the advisor."""
    assert rate_cents_per_minute > 0 and 0 <= platform_fee_bps <= 10_000
    platform = rate_cents_per_minute * platform_fee_bps // 10_000
    advisor = rate_cents_per_minute - platform
    assert advisor + platform == rate_cents_per_minute
    return advisor, platform


async def balance_cents(db: Database, account: AccountRef) -> int | None:
    """O(1): one indexed account row, however long the ledger is."""
    if account.account_id is not None:
        statement = sql("SELECT balance_cents FROM accounts WHERE id = ?", account.account_id)
    else:
        statement = sql(
            "SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = ?",
            account.owner_user_id,
            account.kind,
        )
    row = await db.first(statement)
    return None if row is None else int(row["balance_cents"])
