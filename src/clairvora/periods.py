"""Closing ledger periods: closed history moves to R2, D1 keeps the open period.

A period is every ledger entry, in id order, before the first entry created at
or after the period's end (migration 0096 says why the cut never splits a
transfer). Closing it is a series of steps, each bounded and each safe to run
twice or concurrently:

  1. one D1 call reads the closing period, the next SEGMENT_MAX_ENTRIES entries
     after the closed history (with their transfers) and the closing balances
     of the accounts they touch;
  2. the Worker proves them (ledger_archive.verify: balanced, posted,
     contiguous transfers; each account continuing its closing balance and
     sequence without a gap) and writes them to R2 as one object, which R2
     checks against the sha256 we send;
  3. ONE batch records the segment (only if D1 still holds exactly the entries
     written), each touched account's part of it (segment_accounts) and new
     closing balance (account_closings), and deletes the entries, which the
     trigger of 0096 allows only inside a recorded segment. The step that finds
     nothing left before the end marks the period closed.

A crash between 2 and 3 leaves an object that the retry overwrites with the
same bytes (the key names the entry range). The newest transfer in the table
keeps its entries in D1 until a newer one exists: SQLite gives a new row the
largest rowid + 1, so deleting the largest would let a new entry take an id
inside the closed history.

The ledger check (reconcile.py) starts from account_closings, so its cost
follows the open period; `POST /v1/admin/ledger/periods/{id}/verify` re-proves
a closed period from its R2 objects.
"""

import hashlib
import re
from typing import Any

from pyodide.ffi import JsException

from . import ledger_archive, logs
from .clock import rfc3339
from .db import Database, Statement, TriggerAbort, UniqueViolation, sql
from .errors import Problem, conflict, not_found, service_unavailable, unprocessable
from .ids import new_id

SEGMENT_MAX_ENTRIES = 2000  # ~0.5 MB of JSON lines; one delete of this many rows per batch
MAX_STEPS_PER_CRON_RUN = 3
CLOSE_GRACE_MS = 60 * 60 * 1000  # a period closes once its end is an hour past
DAY_MS = 86_400_000
MAX_VERIFY_SEGMENTS = 10  # per verify request (each an R2 read of <= ~0.5 MB)
OBJECT_PREFIX = "ledger/"

CLOSED_THROUGH = "coalesce((SELECT max(last_entry_id) FROM ledger_segments), 0)"

# The step's whole read in one statement (so the admin route can preload it
# with the caller): the closing period, then one row per entry after the closed
# history, with its transfer and its account's closing balance.
STEP_READ = f"""
SELECT p.id AS period_id, p.ends_before_ms, p.entries AS period_entries, {CLOSED_THROUGH} AS closed_through,
       e.id, e.transfer_id, e.account_id, e.amount_cents, e.balance_after_cents, e.sequence, e.created_at_ms,
       t.transfer_key AS transfer_transfer_key, t.kind AS transfer_kind,
       t.reference_type AS transfer_reference_type, t.reference_id AS transfer_reference_id,
       t.requested_by_user_id AS transfer_requested_by_user_id, t.posted AS transfer_posted,
       t.created_at_ms AS transfer_created_at_ms,
       c.balance_cents AS opening_balance_cents, c.sequence AS opening_sequence
FROM ledger_periods p
LEFT JOIN (SELECT * FROM ledger_entries WHERE id > {CLOSED_THROUGH} ORDER BY id LIMIT ?) e
  ON 1 = 1
LEFT JOIN transfers t ON t.id = e.transfer_id
LEFT JOIN account_closings c ON c.account_id = e.account_id
WHERE p.state = 'closing'
ORDER BY e.id"""  # noqa: S608 - constant text

# Recorded only while D1 holds exactly the entries the object holds.
_RECORD_SEGMENT = """
INSERT INTO ledger_segments (last_entry_id, first_entry_id, period_id, entries, transfers, object_key, sha256,
                             size_bytes, created_at_ms)
SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?
WHERE (SELECT count(*) FROM ledger_entries WHERE id BETWEEN ? AND ?) = ?"""

_RECORD_ACCOUNTS = """
INSERT INTO segment_accounts (account_id, sequence, segment_last_entry_id, opening_balance_cents, opening_sequence,
                              balance_cents)
SELECT g.account_id, g.last_sequence, ?, f.balance_after_cents - f.amount_cents, g.first_sequence - 1,
       l.balance_after_cents
FROM (SELECT account_id, min(sequence) AS first_sequence, max(sequence) AS last_sequence
      FROM ledger_entries WHERE id BETWEEN ? AND ? GROUP BY account_id) g
JOIN ledger_entries f ON f.account_id = g.account_id AND f.sequence = g.first_sequence
JOIN ledger_entries l ON l.account_id = g.account_id AND l.sequence = g.last_sequence"""

_MOVE_CLOSINGS = """
INSERT INTO account_closings (account_id, period_id, balance_cents, sequence)
SELECT account_id, ?, balance_cents, sequence FROM segment_accounts WHERE segment_last_entry_id = ?
ON CONFLICT (account_id) DO UPDATE SET
  period_id = excluded.period_id, balance_cents = excluded.balance_cents, sequence = excluded.sequence"""

_COUNT_SEGMENT = """
UPDATE ledger_periods SET entries = entries + ?, segments = segments + 1, last_entry_id = ?
WHERE id = ? AND state = 'closing'"""

# Everything archived, except the newest transfer's entries (see the docstring).
_DELETE_ARCHIVED = """
DELETE FROM ledger_entries
WHERE id <= ? AND transfer_id <> (SELECT transfer_id FROM ledger_entries ORDER BY id DESC LIMIT 1)"""

_FINISH = """
UPDATE ledger_periods SET state = 'closed', closed_at_ms = ?, last_entry_id = coalesce(last_entry_id, ?)
WHERE id = ? AND state = 'closing'"""

_OPEN_PERIOD_AUTOMATIC = """
INSERT INTO ledger_periods (id, ends_before_ms, state, requested_by_user_id, started_at_ms)
SELECT ?, ?, 'closing', NULL, ?
WHERE NOT EXISTS (SELECT 1 FROM ledger_periods WHERE ends_before_ms >= ? OR state = 'closing')"""

_OPEN_PERIOD = """
INSERT INTO ledger_periods (id, ends_before_ms, state, requested_by_user_id, started_at_ms)
VALUES (?, ?, 'closing', ?, ?)"""


# The transfers of the open period: those with entries past the last closed segment
# (found through the entries' primary key, so a check reading them follows the open
# period, not all history: transfers stay in D1 when their entries go to R2).
OPEN_TRANSFER_IDS = f"(SELECT transfer_id FROM ledger_entries WHERE id > {CLOSED_THROUGH})"  # noqa: S608 - constant

# The time of the oldest movement of the open period (the last closed period's end when
# it has none): a record changed since may have skipped the movement its state says it
# made, which no transfer would show.
OPEN_SINCE_MS = (
    f"coalesce((SELECT min(created_at_ms) FROM ledger_entries WHERE id > {CLOSED_THROUGH}), "  # noqa: S608 - constant
    "(SELECT max(ends_before_ms) FROM ledger_periods WHERE state = 'closed'), 0)"
)


def movements_in_d1(reference_type: str, record_id: str) -> str:
    """SQL condition for the ledger checks: every transfer naming this record still
    holds its entries in D1 (none went to R2 with a closed period, which was proved
    at its close). Constant text: both arguments are names from code, never values."""
    assert re.fullmatch(r"[a-z_]+", reference_type) and re.fullmatch(r"[a-z]+\.id", record_id)
    return (
        f"NOT EXISTS (SELECT 1 FROM transfers z WHERE z.reference_type = '{reference_type}' "  # noqa: S608 - names from code, asserted above
        f"AND z.reference_id = {record_id} "
        "AND NOT EXISTS (SELECT 1 FROM ledger_entries y WHERE y.transfer_id = z.id))"
    )


def open_record_ids(reference_type: str, unsettled: str) -> str:
    """The ids of the records of this type a check driven by their table still reads
    (payments, chargebacks, refund parts, payouts): those a transfer of the open period
    names (through OPEN_TRANSFER_IDS and the transfers' primary key) and those
    `unsettled` selects through an index (records that must still move money, or have
    not yet: pending payments, open chargebacks, parts in transit, open payouts).
    Every other record has all its movements closed, proved at their close, or none and
    a final state reached without one (a declined payment). A check reads `id IN` this,
    so each record is looked up by its primary key and the cost follows the open
    period, not every record ever. Constant text: names and `unsettled` come from code."""
    assert re.fullmatch(r"[a-z_]+", reference_type), reference_type
    assert unsettled.startswith("SELECT ") and "?" not in unsettled, unsettled
    return (
        f"(SELECT o.reference_id FROM transfers o WHERE o.id IN {OPEN_TRANSFER_IDS} "  # noqa: S608 - names from code
        f"AND +o.reference_type = '{reference_type}' UNION {unsettled})"
    )  # the unary + keeps SQLite from walking every transfer of the type by transfers_by_reference


def open_records(reference_type: str, record_id: str, unsettled: str) -> str:
    """SQL condition: the record is one of open_record_ids and none of its movements
    went to R2 with a closed period (movements_in_d1: such a record was proved then)."""
    return (
        f"{record_id} IN {open_record_ids(reference_type, unsettled)} AND {movements_in_d1(reference_type, record_id)}"
    )


def step_read() -> Statement:
    """STEP_READ for the next segment: one entry past it shows whether a transfer spills over."""
    return sql(STEP_READ, SEGMENT_MAX_ENTRIES + 1)


def object_key(period_id: int, first_entry_id: int, last_entry_id: int) -> str:
    return f"{OBJECT_PREFIX}period-{period_id:016d}/{first_entry_id:016d}-{last_entry_id:016d}.jsonl"


def archive_bucket(env: Any) -> Any:
    bucket = getattr(env, "LEDGER_ARCHIVE", None)
    if bucket is None:
        raise Problem(500, "misconfigured", "Server misconfigured", "The LEDGER_ARCHIVE (R2) binding is missing.")
    return bucket


async def start(db: Database, ends_before_ms: int, now_ms: int, by_user_id: int | None) -> dict[str, Any]:
    """Open the close of the period ending at `ends_before_ms` (in order, one at a time)."""
    if ends_before_ms > now_ms - CLOSE_GRACE_MS:
        raise unprocessable(
            "period_not_ended", f"A period closes once its end is {CLOSE_GRACE_MS // 60000} minutes past."
        )
    try:
        row = await db.first(sql(_OPEN_PERIOD + " RETURNING *", new_id(), ends_before_ms, by_user_id, now_ms))
    except UniqueViolation as exc:
        if "ledger_periods.state" in exc.columns:
            raise conflict("period_close_in_progress", "Another period is being closed; it finishes first.") from None
        raise conflict("period_exists", "A period with this end exists.") from None
    except TriggerAbort as exc:
        if exc.code == "period_out_of_order":
            raise conflict(
                "period_out_of_order", "Periods close in order: this end is not after the last one."
            ) from None
        raise
    assert row is not None
    return row


def _cut(rows: list[dict[str, Any]], ends_before_ms: int) -> tuple[list[dict[str, Any]], bool]:
    """The entries of the next segment and whether they reach the period's end."""
    before: list[dict[str, Any]] = []
    for row in rows:
        if row["created_at_ms"] >= ends_before_ms:
            return before, True
        before.append(row)
    if len(before) <= SEGMENT_MAX_ENTRIES:
        return before, True
    # A full page: stop at the last transfer that ends inside it.
    segment = before[:SEGMENT_MAX_ENTRIES]
    spill = before[SEGMENT_MAX_ENTRIES]["transfer_id"]
    while segment and segment[-1]["transfer_id"] == spill:
        segment.pop()
    assert segment, "a transfer has at most ledger.MAX_LEGS entries"
    return segment, False


async def step(db: Database, bucket: Any, now_ms: int, preloaded: list[dict[str, Any]] | None = None) -> str:
    """One bounded step of the period being closed: 'idle' (none), 'archived'
    (a segment), 'closed' (the period), 'failed' (see the logs). `preloaded`:
    the rows of STEP_READ, when they came with the caller lookup."""
    read = preloaded if preloaded is not None else (await db.all(step_read())).rows
    if not read:
        return "idle"
    period = read[0]
    page = [row for row in read if row["id"] is not None]
    rows, reaches_end = _cut(page, int(period["ends_before_ms"]))
    if not rows:
        await db.run(sql(_FINISH, now_ms, int(period["closed_through"]), period["period_id"]))
        logs.info("ledger_period_closed", period_id=period["period_id"], entries=period["period_entries"])
        return "closed"
    openings = {
        r["account_id"]: (r["opening_balance_cents"], r["opening_sequence"])
        for r in rows
        if r["opening_sequence"] is not None
    }
    try:
        spans = ledger_archive.verify(rows, openings)
    except ledger_archive.SegmentInvalid as exc:
        logs.error("ledger_period_unsound", period_id=period["period_id"], error=str(exc))
        return "failed"
    first, last = int(rows[0]["id"]), int(rows[-1]["id"])
    data = ledger_archive.encode(int(period["period_id"]), rows, spans)
    sha256 = hashlib.sha256(data).hexdigest()
    key = object_key(int(period["period_id"]), first, last)
    if not await _put_verified(bucket, key, data, sha256):
        return "failed"
    transfers = len({r["transfer_id"] for r in rows})
    statements = [
        sql(
            _RECORD_SEGMENT,
            last,
            first,
            period["period_id"],
            len(rows),
            transfers,
            key,
            sha256,
            len(data),
            now_ms,
            first,
            last,
            len(rows),
        ),
        sql(_RECORD_ACCOUNTS, last, first, last),
        sql(_MOVE_CLOSINGS, period["period_id"], last),
        sql(_COUNT_SEGMENT, len(rows), last, period["period_id"]),
        sql(_DELETE_ARCHIVED, last),
    ]
    if reaches_end:
        statements.append(sql(_FINISH, now_ms, last, period["period_id"]))
    try:
        await db.batch(statements)
    except (TriggerAbort, UniqueViolation) as exc:  # another step recorded it first, or D1 moved
        logs.warning("ledger_segment_not_recorded", period_id=period["period_id"], error=str(exc)[:200])
        return "failed"
    logs.info("ledger_segment_archived", period_id=period["period_id"], first_entry_id=first, last_entry_id=last)
    return "closed" if reaches_end else "archived"


async def _put_verified(bucket: Any, key: str, data: bytes, sha256: str) -> bool:
    try:
        stored = await bucket.put(key, data, sha256=sha256, httpMetadata={"contentType": "application/x-ndjson"})
    except JsException as exc:  # R2 refuses a body whose sha256 differs, or is unavailable
        logs.error("ledger_segment_put_failed", key=key, error=str(exc)[:200])
        return False
    return stored is not None and int(stored.size) == len(data)


async def run_cron(
    db: Database, bucket: Any, now_ms: int, *, automatic: bool, call_budget: int, hold_ms: int = 0
) -> dict[str, int]:
    """The cron's part: open the close of last month once it is past (when
    automatic), then advance the close in bounded steps. `hold_ms`: the earnings
    hold (clearance.py reads pending entries until they age past it), so last
    month closes only once its every entry has aged past the hold, plus a day for
    the clearance to reach it."""
    if automatic:
        month_start = _month_start_ms(now_ms)
        if month_start <= now_ms - CLOSE_GRACE_MS - (hold_ms + DAY_MS if hold_ms else 0):
            await db.run(sql(_OPEN_PERIOD_AUTOMATIC, new_id(), month_start, now_ms, month_start))
    archived = closed = 0
    for _ in range(MAX_STEPS_PER_CRON_RUN):
        if db.counters.calls + 3 > call_budget:
            break
        outcome = await step(db, bucket, now_ms)
        archived += outcome in ("archived", "closed")
        closed += outcome == "closed"
        if outcome != "archived":
            break
    return {"ledger_segments_archived": archived, "ledger_periods_closed": closed}


def _month_start_ms(now_ms: int) -> int:
    days = now_ms // 86_400_000
    # Civil-from-days (proleptic Gregorian), to find the 1st of this UTC month.
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day_of_month = doy - (153 * mp + 2) // 5 + 1
    return (days - (day_of_month - 1)) * 86_400_000


def period_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "ends_before": rfc3339(int(row["ends_before_ms"])),
        "state": row["state"],
        "entries": row["entries"],
        "segments": row["segments"],
        "last_entry_id": None if row["last_entry_id"] is None else str(row["last_entry_id"]),
        "started_at": rfc3339(int(row["started_at_ms"])),
        "closed_at": rfc3339(row["closed_at_ms"]),
    }


async def get_object(bucket: Any, key: str) -> bytes | None:
    try:
        found = await bucket.get(key)
    except JsException as exc:
        logs.error("ledger_segment_get_failed", key=key, error=str(exc)[:200])
        raise service_unavailable("The ledger archive is briefly unavailable; retry.") from None
    if found is None:
        return None
    return bytes(await found.arrayBuffer())


def require_period(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        raise not_found("period")
    return row
