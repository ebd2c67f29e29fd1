"""Spending limits the client sets for itself (migrations/0071): a daily and a
monthly deposit limit and a self-exclusion period, on the user's row.

The rule, stated once and enforced in SQL: lowering a limit, or starting or
extending self-exclusion, takes effect at once; raising a limit (removing it
counts as raising), or shortening or ending self-exclusion, waits COOLING_OFF_MS
as a pending value with its effective time. The EFFECTIVE value at time t is the
pending one once its time has come, else the current one; the triggers of 0071
compute it from the request's own time (the claim's created_at_ms, the
reading's requested_at_ms) in the very INSERT of the deposit claim and of the
reading request, so no cron has to move anything and concurrent requests, which
D1 runs one transaction after another on the primary, cannot pass a limit
together. This module mirrors the same rule in Python for the replies and
for planning a PATCH (on the row version the If-Match names).

Windows are rolling: the 24 h, and the 30 days, before the deposit.
"""

from typing import Any

from .clock import rfc3339
from .db import Database, sql
from .errors import Problem
from .validation import Int

COOLING_OFF_MS = 24 * 3600 * 1000
DAY_MS = 24 * 3600 * 1000
WINDOW_MS = {"daily": DAY_MS, "monthly": 30 * DAY_MS}
MAX_LIMIT_CENTS = 10_000_000
MAX_EXCLUSION_DAYS = 3650

# The payments a window counts: the same WHERE as the partial index
# payments_counted_by_user_time and the trigger payments_spending_limits.
WINDOW_SUM = """SELECT coalesce(sum(p.amount_cents), 0) AS total FROM payments p
WHERE p.user_id = ? AND p.status IN ('pending', 'approved', 'unknown', 'refunded') AND p.created_at_ms > ?"""

# The trigger codes of payments_spending_limits.
CLAIM_REFUSALS = ("self_excluded", "deposit_limit_daily", "deposit_limit_monthly")

COLUMNS = (
    "daily_deposit_limit_cents",
    "daily_deposit_limit_pending_cents",
    "daily_deposit_limit_pending_at_ms",
    "monthly_deposit_limit_cents",
    "monthly_deposit_limit_pending_cents",
    "monthly_deposit_limit_pending_at_ms",
    "self_excluded_until_ms",
    "self_exclusion_pending_until_ms",
    "self_exclusion_pending_at_ms",
)

PATCH_FIELDS = {
    "daily_deposit_limit_cents": Int(
        low=0,
        high=MAX_LIMIT_CENTS,
        nullable=True,
        description="Deposits in any 24 h at most this (null: no limit). Lowering applies at once, "
        "raising or removing after 24 h.",
    ),
    "monthly_deposit_limit_cents": Int(
        low=0,
        high=MAX_LIMIT_CENTS,
        nullable=True,
        description="Deposits in any 30 days at most this (null: no limit). Lowering applies at once, "
        "raising or removing after 24 h.",
    ),
    "self_exclusion_days": Int(
        low=0,
        high=MAX_EXCLUSION_DAYS,
        description="No deposits and no new readings for this many days from now (0: end it). "
        "Starting or extending applies at once, shortening or ending after 24 h.",
    ),
}

_LIMITS = {
    "daily_deposit_limit_cents": ("daily_deposit_limit_pending_cents", "daily_deposit_limit_pending_at_ms"),
    "monthly_deposit_limit_cents": ("monthly_deposit_limit_pending_cents", "monthly_deposit_limit_pending_at_ms"),
}


def _effective(row: dict[str, Any], current: str, pending: str, pending_at: str, now_ms: int) -> Any:
    at = row.get(pending_at)
    if at is not None and int(at) <= now_ms:
        return row.get(pending)
    return row.get(current)


def effective_limit(row: dict[str, Any], name: str, now_ms: int) -> int | None:
    pending, pending_at = _LIMITS[name]
    value = _effective(row, name, pending, pending_at, now_ms)
    return None if value is None else int(value)


def excluded_until(row: dict[str, Any], now_ms: int) -> int | None:
    """The end of the self-exclusion in force at now_ms, or None."""
    until = _effective(
        row, "self_excluded_until_ms", "self_exclusion_pending_until_ms", "self_exclusion_pending_at_ms", now_ms
    )
    return int(until) if until is not None and int(until) > now_ms else None


def plan(row: dict[str, Any], changes: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """The new values of COLUMNS for the fields of `changes` (a PATCH body),
    from the row as it is at the version the PATCH names. Matured pending values
    are folded into the current ones; untouched fields keep what they had."""
    out = {c: row.get(c) for c in COLUMNS}
    for name, (pending, pending_at) in _LIMITS.items():
        now_value = effective_limit(row, name, now_ms)
        if name not in changes:
            if row.get(pending_at) is not None and int(row[pending_at]) <= now_ms:
                out.update({name: now_value, pending: None, pending_at: None})
            continue
        wanted = changes[name]
        lower_or_same = (wanted is None and now_value is None) or (
            wanted is not None and (now_value is None or wanted <= now_value)
        )
        if lower_or_same:
            out.update({name: wanted, pending: None, pending_at: None})
        else:
            out.update({name: now_value, pending: wanted, pending_at: now_ms + COOLING_OFF_MS})
    current_until = excluded_until(row, now_ms)
    matured = row.get("self_exclusion_pending_at_ms") is not None and int(row["self_exclusion_pending_at_ms"]) <= now_ms
    if "self_exclusion_days" in changes:
        days = changes["self_exclusion_days"]
        wanted_until = now_ms + days * DAY_MS if days > 0 else None
        if current_until is None or (wanted_until is not None and wanted_until >= current_until):
            out.update(
                self_excluded_until_ms=wanted_until,
                self_exclusion_pending_until_ms=None,
                self_exclusion_pending_at_ms=None,
            )
        else:
            out.update(
                self_excluded_until_ms=current_until,
                self_exclusion_pending_until_ms=wanted_until,
                self_exclusion_pending_at_ms=now_ms + COOLING_OFF_MS,
            )
    elif matured:
        out.update(
            self_excluded_until_ms=current_until,
            self_exclusion_pending_until_ms=None,
            self_exclusion_pending_at_ms=None,
        )
    return out


def _pending(row: dict[str, Any], pending: str, pending_at: str, now_ms: int, *, time: bool = False) -> Any:
    at = row.get(pending_at)
    if at is None or int(at) <= now_ms:
        return None
    value = row.get(pending)
    if time:
        value = rfc3339(value) if value is not None else None
    return {"value": value, "effective_at": rfc3339(at)}


def view(row: dict[str, Any], now_ms: int) -> dict[str, Any]:
    until = excluded_until(row, now_ms)
    return {
        "daily_deposit_limit_cents": effective_limit(row, "daily_deposit_limit_cents", now_ms),
        "monthly_deposit_limit_cents": effective_limit(row, "monthly_deposit_limit_cents", now_ms),
        "self_excluded_until": rfc3339(until) if until is not None else None,
        "pending": {
            "daily_deposit_limit_cents": _pending(
                row, "daily_deposit_limit_pending_cents", "daily_deposit_limit_pending_at_ms", now_ms
            ),
            "monthly_deposit_limit_cents": _pending(
                row, "monthly_deposit_limit_pending_cents", "monthly_deposit_limit_pending_at_ms", now_ms
            ),
            "self_excluded_until": _pending(
                row, "self_exclusion_pending_until_ms", "self_exclusion_pending_at_ms", now_ms, time=True
            )
            if until is not None
            else None,
        },
    }


def self_excluded(until_ms: int | None) -> Problem:
    extra = {"self_excluded_until": rfc3339(until_ms)} if until_ms is not None else {}
    return Problem(
        403,
        "self_excluded",
        "Self-excluded",
        "You excluded yourself from deposits and new readings; it ends at the time you chose "
        "(or 24 h after you asked to end it).",
        extra=extra,
    )


async def refusal_for(db: Database, trigger_code: str, user_id: int, amount_cents: int, now_ms: int) -> Problem:
    """The problem for a deposit claim a trigger of 0071 refused (one read, on the refusal only)."""
    user_sql = "SELECT " + ", ".join(COLUMNS) + " FROM users WHERE id = ?"  # noqa: S608 - constant column names
    if trigger_code == "self_excluded":
        row = await db.first(sql(user_sql, user_id))
        return self_excluded(excluded_until(row or {}, now_ms))
    window = "daily" if trigger_code == "deposit_limit_daily" else "monthly"
    users, totals = await db.batch([sql(user_sql, user_id), sql(WINDOW_SUM, user_id, now_ms - WINDOW_MS[window])])
    limit = effective_limit(users.rows[0] if users.rows else {}, f"{window}_deposit_limit_cents", now_ms) or 0
    used = int(totals.rows[0]["total"]) if totals.rows else 0
    return Problem(
        422,
        "deposit_limit_exceeded",
        "Deposit limit exceeded",
        f"This deposit would pass your {window} deposit limit; nothing was charged.",
        extra={
            "window": window,
            "limit_cents": limit,
            "remaining_cents": max(0, limit - used),
            "amount_cents": amount_cents,
        },
    )


SCHEMAS: dict[str, Any] = {
    "PendingLimit": {
        "type": ["object", "null"],
        "required": ["value", "effective_at"],
        "properties": {
            "value": {"type": ["integer", "null"]},
            "effective_at": {"type": "string", "format": "date-time"},
        },
    },
    "PendingExclusion": {
        "type": ["object", "null"],
        "required": ["value", "effective_at"],
        "properties": {
            "value": {"type": ["string", "null"], "format": "date-time"},
            "effective_at": {"type": "string", "format": "date-time"},
        },
    },
    "SpendingLimits": {
        "type": "object",
        "required": ["daily_deposit_limit_cents", "monthly_deposit_limit_cents", "self_excluded_until", "pending"],
        "properties": {
            "daily_deposit_limit_cents": {"type": ["integer", "null"], "description": "In force now (null: none)."},
            "monthly_deposit_limit_cents": {"type": ["integer", "null"], "description": "In force now (null: none)."},
            "self_excluded_until": {"type": ["string", "null"], "format": "date-time"},
            "pending": {
                "type": "object",
                "description": "Raises and shortenings waiting for their 24 h cooling-off.",
                "required": ["daily_deposit_limit_cents", "monthly_deposit_limit_cents", "self_excluded_until"],
                "properties": {
                    "daily_deposit_limit_cents": {"$ref": "#/components/schemas/PendingLimit"},
                    "monthly_deposit_limit_cents": {"$ref": "#/components/schemas/PendingLimit"},
                    "self_excluded_until": {"$ref": "#/components/schemas/PendingExclusion"},
                },
            },
        },
    },
}
