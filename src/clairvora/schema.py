"""The row types the code declares for every table, checked against D1.

One TypedDict per table: a column's Python type says its declared SQL type
(int -> INTEGER, str -> TEXT, float -> REAL, bytes -> BLOB; a Literal of
strings is TEXT) and `| None` says it may be NULL. `tests/test_schema_drift.py`
applies every migration (the test runtime already did) and compares the
migrated schema with these declarations, so SQL and Python cannot drift:
a migration that adds a table or a column must add it here too, and the
test's failure message prints the exact lines to add.
"""

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from .db import Database, sql
from .ledger import AccountKind, ReferenceType, TransferKind
from .schema_promo import PROMO_TABLES

# --- 0001_identity.sql -------------------------------------------------------


class UserRow(TypedDict):
    id: int
    clerk_user_id: str
    display_name: str | None
    time_zone: str
    is_admin: int
    version: int
    created_at_ms: int
    updated_at_ms: int
    # 0071_spending_limits.sql: NULL limit = none; a pending value waits for its *_pending_at_ms.
    daily_deposit_limit_cents: int | None
    daily_deposit_limit_pending_at_ms: int | None
    daily_deposit_limit_pending_cents: int | None
    monthly_deposit_limit_cents: int | None
    monthly_deposit_limit_pending_at_ms: int | None
    monthly_deposit_limit_pending_cents: int | None
    self_excluded_until_ms: int | None
    self_exclusion_pending_at_ms: int | None
    self_exclusion_pending_until_ms: int | None
    # 0080_erasure.sql: set once by DELETE /v1/me (the row then holds no personal data).
    erased_at_ms: int | None


class CategoryRow(TypedDict):
    slug: str
    name: str


class AdvisorRow(TypedDict):
    user_id: int
    headline: str
    bio: str
    rate_cents_per_minute: int
    status: Literal["online", "offline", "busy"]
    rating_count: int
    rating_sum: int
    rating_milli: int
    version: int
    created_at_ms: int
    updated_at_ms: int
    # 0030_advisor_photos.sql: the R2 reference only (all four set or all NULL).
    photo_key: str | None
    photo_content_type: Literal["image/jpeg", "image/png", "image/webp"] | None
    photo_size_bytes: int | None
    photo_sha256: str | None


class AdvisorCategoryRow(TypedDict):
    category: str
    advisor_id: int


# --- 0002_ledger.sql ---------------------------------------------------------


class AccountRow(TypedDict):
    id: int
    kind: AccountKind
    owner_user_id: int | None
    currency: str
    balance_cents: int
    last_sequence: int
    created_at_ms: int


class TransferRow(TypedDict):
    id: int
    transfer_key: str
    kind: TransferKind
    reference_type: ReferenceType | None
    reference_id: int | None
    requested_by_user_id: int | None
    posted: int
    created_at_ms: int


class LedgerEntryRow(TypedDict):
    id: int
    transfer_id: int
    account_id: int
    amount_cents: int
    balance_after_cents: int
    sequence: int
    created_at_ms: int


class PaymentRow(TypedDict):
    id: int
    user_id: int
    amount_cents: int
    currency: str
    status: Literal["pending", "approved", "declined", "error", "unknown", "refunded", "voided"]
    gateway_transaction_id: str | None
    gateway_response_code: str | None
    reversed_cents: int
    created_at_ms: int
    updated_at_ms: int
    refunded_cents: int  # 0092
    charged_back_cents: int  # 0092


class IdempotencyKeyRow(TypedDict):
    user_id: int
    idempotency_key: str
    route: str
    request_sha256: str
    state: Literal["pending", "done"]
    response_status: int | None
    response_body: str | None
    created_at_ms: int
    expires_at_ms: int


class WebhookEventRow(TypedDict):
    notification_id: str
    event_type: str
    gateway_transaction_id: str | None
    payment_id: int | None
    outcome: str
    received_at_ms: int


# --- 0003_readings.sql -------------------------------------------------------


class ReadingRow(TypedDict):
    id: int
    client_id: int
    advisor_id: int
    channel: Literal["chat"]
    status: Literal["requested", "active", "ended", "declined", "cancelled", "expired"]
    rate_cents_per_minute: int
    advisor_cents_per_minute: int
    platform_cents_per_minute: int
    billing_period_seconds: int
    billed_minutes: int
    end_reason: Literal["client_ended", "advisor_ended", "insufficient_funds", "heartbeat_timeout"] | None
    requested_at_ms: int
    accepted_at_ms: int | None
    ended_at_ms: int | None
    last_heartbeat_at_ms: int | None
    version: int
    # 0040_reading_presence.sql
    client_heartbeat_at_ms: int | None
    advisor_heartbeat_at_ms: int | None
    heartbeat_timeout_seconds: int
    silent_party: Literal["client", "advisor", "both"] | None
    # 0091_promotions.sql: the advisor's part of a promo-paid minute (NULL: the normal part).
    promo_advisor_cents_per_minute: int | None


class ReadingChargeRow(TypedDict):
    reading_id: int
    minute: int
    transfer_id: int
    amount_cents: int
    charged_at_ms: int
    promo_cents: int  # 0091: paid by promo credit (the rest by the wallet)


class MessageRow(TypedDict):
    id: int
    reading_id: int
    sender_id: int
    key_version: int
    iv_b64: str
    ciphertext_b64: str
    created_at_ms: int


class ReviewRow(TypedDict):
    id: int
    reading_id: int
    client_id: int
    advisor_id: int
    rating: int
    comment: str | None
    created_at_ms: int


# --- 0010_money.sql -----------------------------------------------------------


class ReadingRefundRow(TypedDict):
    id: int
    reading_id: int
    transfer_id: int
    amount_cents: int
    advisor_cents: int
    platform_cents: int
    refunded_before_cents: int
    reason: str
    requested_by_user_id: int
    created_at_ms: int
    # 0091: back to promo credit, and platform_promotions' part of platform_cents.
    promo_cents: int
    promotions_cents: int


# --- 0030_advisor_photos.sql ------------------------------------------------


class MaintenanceCursorRow(TypedDict):
    job: str
    cursor: str | None
    updated_at_ms: int


# --- 0060_card_testing.sql -------------------------------------------------


class DepositAttemptRow(TypedDict):
    payment_id: int
    user_id: int
    client_ip: str | None
    state: Literal["in_flight", "failed", "done"]
    refused: int
    created_at_ms: int
    settled_at_ms: int | None


class DepositCooloffRow(TypedDict):
    scope: Literal["user", "ip"]
    subject: str
    failures: int
    started_at_ms: int
    until_ms: int
    trips: int


# --- 0070_advisor_blocks.sql -------------------------------------------------


class AdvisorBlockRow(TypedDict):
    advisor_id: int
    client_id: int
    created_at_ms: int


# --- 0096_ledger_periods.sql -------------------------------------------------


class LedgerPeriodRow(TypedDict):
    id: int
    ends_before_ms: int
    state: Literal["closing", "closed"]
    entries: int
    segments: int
    last_entry_id: int | None
    requested_by_user_id: int | None
    started_at_ms: int
    closed_at_ms: int | None


class LedgerSegmentRow(TypedDict):
    last_entry_id: int
    first_entry_id: int
    period_id: int
    entries: int
    transfers: int
    object_key: str
    sha256: str
    size_bytes: int
    created_at_ms: int


class AccountClosingRow(TypedDict):
    account_id: int
    period_id: int
    balance_cents: int
    sequence: int


class SegmentAccountRow(TypedDict):
    account_id: int
    sequence: int
    segment_last_entry_id: int
    opening_balance_cents: int
    opening_sequence: int
    balance_cents: int


# --- 0095_message_archive.sql ------------------------------------------------


class MessageArchiveRow(TypedDict):
    reading_id: int
    state: Literal["due", "archived", "oversize"]
    due_at_ms: int
    generation: int
    object_key: str | None
    sha256: str | None
    r2_etag: str | None
    size_bytes: int | None
    message_count: int | None
    client_message_count: int | None
    advisor_message_count: int | None
    last_message_at_ms: int | None
    archived_at_ms: int | None
    attempt: int
    attempt_token: str | None
    attempt_at_ms: int | None
    erasures: int
    erasures_applied: int


class ArchiveObjectDeletionRow(TypedDict):
    object_key: str
    reading_id: int
    created_at_ms: int


# --- 0092_card_refunds_chargebacks.sql ----------------------------------------


class ChargebackRow(TypedDict):
    id: int
    payment_id: int
    user_id: int
    amount_cents: int
    reason_code: str | None
    note: str
    advisor_side: Literal["platform", "clawback"]
    clawback_cents: int
    state: Literal["open", "won", "lost"]
    recorded_by_user_id: int
    resolved_by_user_id: int | None
    resolution_note: str | None
    created_at_ms: int
    resolved_at_ms: int | None


class WalletRefundRow(TypedDict):
    id: int
    user_id: int
    amount_cents: int
    parts: int
    created_at_ms: int


class WalletRefundPartRow(TypedDict):
    id: int
    refund_id: int
    user_id: int
    payment_id: int
    amount_cents: int
    state: Literal["in_transit", "settled", "returned"]
    gateway_transaction_id: str | None
    outcome: Literal["approved", "duplicate", "found", "refused", "not_processed"] | None
    gateway_error_code: str | None
    created_at_ms: int
    updated_at_ms: int
    resolved_at_ms: int | None


# --- 0093_payouts.sql ---------------------------------------------------------


class AdvisorPayoutStateRow(TypedDict):
    advisor_id: int
    cleared_through_sequence: int
    next_clearance_at_ms: int
    auto_payout_due_at_ms: int | None
    last_payout_at_ms: int | None
    updated_at_ms: int


class EarningsClearanceRow(TypedDict):
    id: int
    advisor_id: int
    transfer_id: int
    amount_cents: int
    through_sequence: int
    pending_sequence: int
    cutoff_ms: int
    created_at_ms: int


class PayoutMethodRow(TypedDict):
    user_id: int
    recipient_type: Literal["EMAIL", "PAYPAL_ID"]
    receiver_masked: str
    key_version: int
    iv_b64: str
    ciphertext_b64: str
    version: int
    created_at_ms: int
    updated_at_ms: int


class PayoutRow(TypedDict):
    id: int
    advisor_id: int
    amount_cents: int
    currency: str
    status: Literal["requested", "sent", "unclaimed", "succeeded", "failed", "returned"]
    origin: Literal["request", "schedule"]
    recipient_type: Literal["EMAIL", "PAYPAL_ID"]
    receiver_masked: str | None
    receiver_key_version: int | None
    receiver_iv_b64: str | None
    receiver_ciphertext_b64: str | None
    paypal_batch_id: str | None
    paypal_item_id: str | None
    batch_status: str | None
    item_status: str | None
    failure_code: str | None
    attempts: int
    next_attempt_at_ms: int | None
    created_at_ms: int
    updated_at_ms: int


class PaypalWebhookEventRow(TypedDict):
    event_id: str
    event_type: str
    payout_id: int | None
    outcome: str
    received_at_ms: int


# --- 0094_advisor_listing.sql ---------------------------------------------------


class AdvisorListingRow(TypedDict):
    """The search listing: derived from advisors, advisor_categories and users
    by triggers (category '*' = every advisor); search.py reads only this."""

    id: int
    category: str
    advisor_id: int
    status: str
    rate_cents_per_minute: int
    rating_key: int
    rating_count: int
    rating_sum: int
    headline: str
    bio: str
    version: int
    created_at_ms: int
    updated_at_ms: int
    photo_sha256: str | None
    display_name: str | None
    categories_json: str


# Every application table. A migration that creates a table adds its row type here.
TABLES: dict[str, type] = {
    "users": UserRow,
    "categories": CategoryRow,
    "advisors": AdvisorRow,
    "advisor_categories": AdvisorCategoryRow,
    "accounts": AccountRow,
    "transfers": TransferRow,
    "ledger_entries": LedgerEntryRow,
    "payments": PaymentRow,
    "idempotency_keys": IdempotencyKeyRow,
    "webhook_events": WebhookEventRow,
    "readings": ReadingRow,
    "reading_charges": ReadingChargeRow,
    "messages": MessageRow,
    "reviews": ReviewRow,
    "reading_refunds": ReadingRefundRow,
    "maintenance_cursors": MaintenanceCursorRow,
    "deposit_attempts": DepositAttemptRow,
    "deposit_cooloffs": DepositCooloffRow,
    "advisor_blocks": AdvisorBlockRow,
    "ledger_periods": LedgerPeriodRow,
    "ledger_segments": LedgerSegmentRow,
    "account_closings": AccountClosingRow,
    "segment_accounts": SegmentAccountRow,
    "message_archives": MessageArchiveRow,
    "archive_object_deletions": ArchiveObjectDeletionRow,
    **PROMO_TABLES,  # 0091 (schema_promo.py)
    "chargebacks": ChargebackRow,
    "wallet_refunds": WalletRefundRow,
    "wallet_refund_parts": WalletRefundPartRow,
    "advisor_payout_state": AdvisorPayoutStateRow,
    "earnings_clearances": EarningsClearanceRow,
    "payout_methods": PayoutMethodRow,
    "payouts": PayoutRow,
    "paypal_webhook_events": PaypalWebhookEventRow,
    "advisor_listing": AdvisorListingRow,
}

# --- comparison with the migrated schema -------------------------------------

SQL_TYPE_OF: dict[type, str] = {int: "INTEGER", str: "TEXT", float: "REAL", bytes: "BLOB"}
PYTHON_TYPE_OF: dict[str, str] = {v: k.__name__ for k, v in SQL_TYPE_OF.items()}


@dataclass(frozen=True, slots=True)
class Column:
    sql_type: str  # the declared type as PRAGMA table_info reports it, e.g. "INTEGER"
    nullable: bool

    def python(self) -> str:
        base = PYTHON_TYPE_OF.get(
            self.sql_type, f"<declare the column INTEGER, TEXT, REAL or BLOB in its migration, not {self.sql_type!r}>"
        )
        return f"{base} | None" if self.nullable else base

    def sql(self) -> str:
        return self.sql_type + ("" if self.nullable else " NOT NULL")


Schema = dict[str, dict[str, Column]]


def _column(annotation: Any, where: str) -> Column:
    nullable = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        assert len(args) == 1, f"{where}: one type and optionally None, got {annotation!r}"
        annotation = args[0]
    if typing.get_origin(annotation) is Literal:
        kinds = {type(v) for v in typing.get_args(annotation)}
        assert len(kinds) == 1, f"{where}: a Literal of one type, got {annotation!r}"
        annotation = kinds.pop()
    assert annotation in SQL_TYPE_OF, f"{where}: use int, str, float or bytes, got {annotation!r}"
    return Column(SQL_TYPE_OF[annotation], nullable)


def declared_schema(tables: dict[str, type] = TABLES) -> Schema:
    """TABLES as {table: {column: Column}}."""
    out: Schema = {}
    for table, row_type in tables.items():
        hints = typing.get_type_hints(row_type)
        out[table] = {name: _column(hint, f"{row_type.__name__}.{name}") for name, hint in hints.items()}
    return out


# Internal tables of SQLite, D1 and wrangler's migration bookkeeping.
_MIGRATED_COLUMNS = """
SELECT t.name AS table_name, t.wr AS without_rowid,
       c.name AS column_name, c.type AS declared_type, c."notnull" AS not_null, c.pk AS pk
FROM pragma_table_list AS t
JOIN pragma_table_info(t.name) AS c
WHERE t.schema = 'main' AND t.type = 'table'
  AND t.name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
  AND t.name NOT LIKE '\\_cf\\_%' ESCAPE '\\'
  AND t.name <> 'd1_migrations'
ORDER BY t.name, c.cid"""


async def migrated_schema(db: Database) -> Schema:
    """The schema D1 holds, one query. A column counts as nullable unless it is
    NOT NULL, the INTEGER PRIMARY KEY of a rowid table (the rowid), or part of
    a WITHOUT ROWID table's primary key (SQLite enforces both)."""
    rows = (await db.all(sql(_MIGRATED_COLUMNS))).rows
    pk_counts: dict[str, int] = {}
    for r in rows:
        pk_counts[r["table_name"]] = pk_counts.get(r["table_name"], 0) + (1 if r["pk"] else 0)
    out: Schema = {}
    for r in rows:
        table = r["table_name"]
        declared = str(r["declared_type"] or "")
        rowid_alias = not r["without_rowid"] and r["pk"] and pk_counts[table] == 1 and declared.upper() == "INTEGER"
        not_null = bool(r["not_null"]) or bool(rowid_alias) or bool(r["without_rowid"] and r["pk"])
        out.setdefault(table, {})[r["column_name"]] = Column(declared, not not_null)
    return out


def _class_name(table: str) -> str:
    words = table.split("_")
    if words[-1].endswith("ies"):
        words[-1] = words[-1][:-3] + "y"
    elif words[-1].endswith("s"):
        words[-1] = words[-1][:-1]
    return "".join(w.capitalize() for w in words) + "Row"


def drift(declared: Schema, migrated: Schema, names: dict[str, str] | None = None) -> list[str]:
    """What differs, each line telling the reader what to change in schema.py."""
    names = names or {t: rt.__name__ for t, rt in TABLES.items()}
    problems: list[str] = []
    for table in sorted(migrated.keys() - declared.keys()):
        body = "\n".join(f"    {c}: {col.python()}" for c, col in migrated[table].items())
        cls = _class_name(table)
        problems.append(
            f"table {table!r} exists in the migrations but not in src/clairvora/schema.py; add\n\n"
            f'class {cls}(TypedDict):\n{body}\n\nand the entry  "{table}": {cls},  to TABLES.'
        )
    for table in sorted(declared.keys() - migrated.keys()):
        problems.append(
            f"table {table!r} is declared in schema.py ({names.get(table, '?')}) "
            f"but no migration creates it: remove it from TABLES or add the migration."
        )
    for table in sorted(declared.keys() & migrated.keys()):
        cls = names.get(table, _class_name(table))
        have, want = declared[table], migrated[table]
        for column in want:
            if column not in have:
                problems.append(
                    f"{table}.{column} ({want[column].sql()}) is missing from schema.py: "
                    f"add  `{column}: {want[column].python()}`  to class {cls}."
                )
            elif have[column] != want[column]:
                problems.append(
                    f"{table}.{column}: the migrations say {want[column].sql()}, "
                    f"{cls} says `{have[column].python()}`: "
                    f"change it to  `{column}: {want[column].python()}`."
                )
        for column in have:
            if column not in want:
                problems.append(
                    f"{table}.{column} is declared in {cls} but no migration creates it: "
                    f"remove `{column}` from {cls} or add the column in a migration."
                )
    return problems
