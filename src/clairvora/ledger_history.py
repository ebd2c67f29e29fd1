"""An account's own entries, newest first, across the open period (D1) and
closed periods (R2).

A page reads the open entries from D1 (ledger.own_entries_page) and, in the
same batch, which archived segment holds the account's entries just below the
cursor (closed_part). Only when D1's rows do not fill the page does it read
that one R2 object (at most periods.SEGMENT_MAX_ENTRIES entries) and take the
account's entries from it. A page is then at most one segment deep, so it may
hold fewer than `limit` items; its next_cursor leads on (sequences run 1..n
without gaps, so there is more exactly while the lowest one is above 1).
"""

import hashlib
from typing import Any

from . import ledger_archive, logs, periods
from .db import Statement, sql
from .errors import service_unavailable

_CLOSED_PART = """
SELECT s.object_key, s.sha256, p.account_id, p.opening_sequence, p.sequence
FROM segment_accounts p JOIN ledger_segments s ON s.last_entry_id = p.segment_last_entry_id
WHERE p.account_id = (SELECT id FROM accounts WHERE owner_user_id = ? AND kind = ?)
  AND p.opening_sequence + 1 < ?
ORDER BY p.sequence DESC LIMIT 1"""


def closed_part(owner_user_id: int, kind: str, before_sequence: int) -> Statement:
    """The archived part of the caller's own account holding the entries below the cursor."""
    return sql(_CLOSED_PART, owner_user_id, kind, before_sequence)


async def page(
    env: Any, open_rows: list[dict[str, Any]], parts: list[dict[str, Any]], before: int, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """(rows, next_cursor) from D1's rows (limit + 1 asked) and, if they fall short, the archive."""
    rows = open_rows[:limit]
    if len(open_rows) > limit:
        return rows, str(rows[-1]["sequence"])
    lowest = int(rows[-1]["sequence"]) if rows else before
    if lowest <= 1 or not parts:
        return rows, None
    part = parts[0]
    data = await periods.get_object(periods.archive_bucket(env), part["object_key"])
    if data is None or hashlib.sha256(data).hexdigest() != part["sha256"]:
        logs.error("ledger_history_archive_unreadable", object_key=part["object_key"])
        raise service_unavailable("Older entries are briefly unavailable; retry.")
    _trailer, archived = ledger_archive.decode(data)
    mine = sorted(
        (r for r in archived if r["account_id"] == part["account_id"] and r["sequence"] < lowest),
        key=lambda r: r["sequence"],
        reverse=True,
    )
    rows += [_as_open_row(r) for r in mine[: limit - len(rows)]]
    last = int(rows[-1]["sequence"]) if rows else 1
    return rows, str(last) if last > 1 else None


def _as_open_row(row: dict[str, Any]) -> dict[str, Any]:
    """An archived entry in the shape of ledger.own_entries_page's rows."""
    return {
        "id": row["id"],
        "sequence": row["sequence"],
        "amount_cents": row["amount_cents"],
        "balance_after_cents": row["balance_after_cents"],
        "created_at_ms": row["created_at_ms"],
        "kind": row["transfer_kind"],
        "reference_type": row["transfer_reference_type"],
        "reference_id": row["transfer_reference_id"],
    }
