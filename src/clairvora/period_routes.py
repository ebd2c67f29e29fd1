"""Admin routes of the ledger's period close (the mechanism: periods.py).

    POST /v1/admin/ledger/periods                 open the close of a period (its end)
    GET  /v1/admin/ledger/periods                 the newest periods
    GET  /v1/admin/ledger/periods/{id}            one period
    POST /v1/admin/ledger/periods/{id}/advance    run one close step now (the cron runs them too)
    POST /v1/admin/ledger/periods/{id}/verify     re-prove a closed period from its R2 objects

Every route is two D1 round trips at most: the caller lookup (with the step's
read preloaded for `advance`) and one statement or batch.
"""

import hashlib
from typing import Any

from . import ledger_archive, periods
from .clock import parse_rfc3339_ms, rfc3339
from .db import Statement, sql
from .errors import not_found, unprocessable
from .requests import RequestContext
from .responses import Reply
from .routing import Route
from .validation import Int, Obj, Str

MAX_LISTED = 50
MAX_PROBLEMS = 10

# An RFC 3339 instant in UTC, to the second or millisecond.
INSTANT_PATTERN = (
    r"^2[0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{3})?Z$"
)

START_BODY = Obj(
    {
        "ends_before": Str(
            min_len=20,
            max_len=24,
            pattern=INSTANT_PATTERN,
            description="RFC 3339 instant in UTC (e.g. 2026-12-01T00:00:00Z): entries created before it close",
        )
    },
    required=("ends_before",),
)
VERIFY_QUERY = Obj(
    {"after_segment": Int(low=0, high=2**52, description="continue after this segment (a previous next_cursor)")},
    required=(),
)


def _parse_instant_ms(text: str) -> int:
    """The instant of a string the body's pattern accepted; a day the month lacks is a 422."""
    try:
        return parse_rfc3339_ms(text)
    except ValueError:
        raise unprocessable("invalid_instant", "'ends_before' names a day its month does not have.") from None


async def start_close(rc: RequestContext) -> Reply:
    body = await rc.parsed_body()
    row = await periods.start(rc.db, _parse_instant_ms(body["ends_before"]), rc.clock.now_ms(), rc.user_id)
    return Reply({"period": periods.period_view(row)}, 201)


async def list_periods(rc: RequestContext) -> Reply:
    rows = await rc.db.all(sql("SELECT * FROM ledger_periods ORDER BY ends_before_ms DESC LIMIT ?", MAX_LISTED))
    return Reply({"items": [periods.period_view(r) for r in rows.rows]})


async def get_period(rc: RequestContext) -> Reply:
    row = await rc.db.first(sql("SELECT * FROM ledger_periods WHERE id = ?", rc.params["period_id"]))
    return Reply({"period": periods.period_view(periods.require_period(row))})


def _preload_step(_params: dict[str, Any], _sub: str) -> Statement:
    return periods.step_read()


async def advance(rc: RequestContext) -> Reply:
    preloaded = rc.take_preloaded()
    if preloaded and preloaded[0]["period_id"] != rc.params["period_id"]:
        raise not_found("period")  # not the period being closed (closed already, or none such)
    outcome = await periods.step(rc.db, periods.archive_bucket(rc.env), rc.clock.now_ms(), preloaded)
    if outcome == "idle":
        raise not_found("period")
    return Reply({"outcome": outcome})


_SEGMENTS = """
SELECT last_entry_id, first_entry_id, period_id, entries, transfers, object_key, sha256, size_bytes
FROM ledger_segments WHERE period_id = ? AND last_entry_id > ? ORDER BY last_entry_id LIMIT ?"""

_SEGMENT_ACCOUNTS = """
SELECT account_id, sequence, segment_last_entry_id, opening_balance_cents, opening_sequence, balance_cents
FROM segment_accounts WHERE segment_last_entry_id IN (
  SELECT last_entry_id FROM ledger_segments WHERE period_id = ? AND last_entry_id > ? ORDER BY last_entry_id LIMIT ?)"""

# An account's part of a segment must open where its previous part closed.
_CHAIN_BREAKS = """
SELECT s.account_id, s.sequence FROM segment_accounts s
LEFT JOIN segment_accounts p ON p.account_id = s.account_id AND p.sequence = s.opening_sequence
WHERE s.segment_last_entry_id IN (
  SELECT last_entry_id FROM ledger_segments WHERE period_id = ? AND last_entry_id > ? ORDER BY last_entry_id LIMIT ?)
  AND ((s.opening_sequence = 0 AND s.opening_balance_cents <> 0)
       OR (s.opening_sequence > 0 AND (p.account_id IS NULL OR p.balance_cents <> s.opening_balance_cents)))
LIMIT ?"""


async def verify_period(rc: RequestContext) -> Reply:
    period_id: int = rc.params["period_id"]
    after = int(rc.parsed_query().get("after_segment") or 0)
    window = (period_id, after, periods.MAX_VERIFY_SEGMENTS)
    found, segments, parts, breaks, totals = await rc.db.batch(
        [
            sql("SELECT * FROM ledger_periods WHERE id = ?", period_id),
            sql(_SEGMENTS, period_id, after, periods.MAX_VERIFY_SEGMENTS + 1),
            sql(_SEGMENT_ACCOUNTS, *window),
            sql(_CHAIN_BREAKS, *window, MAX_PROBLEMS),
            sql(
                "SELECT count(*) AS n, coalesce(sum(entries), 0) AS entries FROM ledger_segments WHERE period_id = ?",
                period_id,
            ),
        ]
    )
    period = periods.require_period(found.rows[0] if found.rows else None)
    problems = [
        f"account {b['account_id']}: part ending at sequence {b['sequence']} does not open where its previous part closed"
        for b in breaks.rows
    ]
    page = segments.rows[: periods.MAX_VERIFY_SEGMENTS]
    by_segment: dict[int, list[dict[str, Any]]] = {}
    for part in parts.rows:
        by_segment.setdefault(int(part["segment_last_entry_id"]), []).append(part)
    bucket = periods.archive_bucket(rc.env)
    entries = 0
    for segment in page:
        entries += segment["entries"]
        problems.extend(await _prove_segment(bucket, segment, by_segment.get(int(segment["last_entry_id"]), [])))
    complete = len(segments.rows) <= periods.MAX_VERIFY_SEGMENTS
    if complete and period["state"] == "closed":
        total = totals.rows[0]
        if (total["n"], total["entries"]) != (period["segments"], period["entries"]):
            problems.append("the period's segment and entry counts differ from its recorded segments")
    return Reply(
        {
            "period": periods.period_view(period),
            "ok": not problems,
            "segments_verified": len(page),
            "entries_verified": entries,
            "problems": problems[:MAX_PROBLEMS],
            "next_cursor": None if complete else str(page[-1]["last_entry_id"]),
            "verified_at": rfc3339(rc.clock.now_ms()),
        }
    )


async def _prove_segment(bucket: Any, segment: dict[str, Any], parts: list[dict[str, Any]]) -> list[str]:
    name = f"segment {segment['first_entry_id']}-{segment['last_entry_id']}"
    data = await periods.get_object(bucket, segment["object_key"])
    if data is None:
        return [f"{name}: its object is missing from R2"]
    if len(data) != segment["size_bytes"] or hashlib.sha256(data).hexdigest() != segment["sha256"]:
        return [f"{name}: the object's bytes differ from the recorded sha256"]
    try:
        trailer, rows = ledger_archive.decode(data)
        openings = {a.account_id: (a.opening_balance_cents, a.opening_sequence) for a in trailer.accounts}
        spans = ledger_archive.verify(rows, openings)
    except (ledger_archive.SegmentInvalid, ValueError, KeyError) as exc:
        return [f"{name}: {exc}"]
    recorded = {
        (p["account_id"], p["opening_balance_cents"], p["opening_sequence"], p["balance_cents"], p["sequence"])
        for p in parts
    }
    proved = {
        (s.account_id, s.opening_balance_cents, s.opening_sequence, s.balance_cents, s.sequence) for s in spans.values()
    }
    archived = {
        (a.account_id, a.opening_balance_cents, a.opening_sequence, a.balance_cents, a.sequence)
        for a in trailer.accounts
    }
    problems = []
    if (trailer.first_entry_id, trailer.last_entry_id, trailer.period_id) != (
        segment["first_entry_id"],
        segment["last_entry_id"],
        segment["period_id"],
    ) or trailer.entries != segment["entries"]:
        problems.append(f"{name}: the object's range or count differs from its record")
    if not proved == archived == recorded:
        problems.append(f"{name}: the accounts' balances differ between the entries, the trailer and D1")
    return problems


PERIOD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "ends_before", "state", "entries", "segments", "last_entry_id", "started_at", "closed_at"],
    "properties": {
        "id": {"type": "string"},
        "ends_before": {"type": "string", "format": "date-time"},
        "state": {"type": "string", "enum": ["closing", "closed"]},
        "entries": {"type": "integer", "minimum": 0},
        "segments": {"type": "integer", "minimum": 0},
        "last_entry_id": {"type": ["string", "null"]},
        "started_at": {"type": "string", "format": "date-time"},
        "closed_at": {"type": ["string", "null"], "format": "date-time"},
    },
}

SCHEMAS: dict[str, Any] = {
    "LedgerPeriod": {"type": "object", "required": ["period"], "properties": {"period": PERIOD_SCHEMA}},
    "LedgerPeriodList": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "maxItems": MAX_LISTED, "items": PERIOD_SCHEMA}},
    },
    "LedgerPeriodStep": {
        "type": "object",
        "required": ["outcome"],
        "properties": {"outcome": {"type": "string", "enum": ["archived", "closed", "failed"]}},
    },
    "LedgerPeriodProof": {
        "type": "object",
        "required": ["period", "ok", "segments_verified", "entries_verified", "problems", "next_cursor"],
        "properties": {
            "period": PERIOD_SCHEMA,
            "ok": {"type": "boolean"},
            "segments_verified": {"type": "integer", "minimum": 0},
            "entries_verified": {"type": "integer", "minimum": 0},
            "problems": {"type": "array", "maxItems": MAX_PROBLEMS, "items": {"type": "string"}},
            "next_cursor": {"type": ["string", "null"]},
            "verified_at": {"type": "string", "format": "date-time"},
        },
    },
}

ROUTES = [
    Route(
        "POST",
        "/v1/admin/ledger/periods",
        start_close,
        "Open the close of the ledger period ending at `ends_before` (periods close in order, one at a time)",
        auth="admin",
        primary=True,
        body=START_BODY,
        responses={201: "LedgerPeriod"},
        problems=(409, 422),
        tag="admin",
    ),
    Route(
        "GET",
        "/v1/admin/ledger/periods",
        list_periods,
        "The newest ledger periods",
        auth="admin",
        primary=True,
        responses={200: "LedgerPeriodList"},
        tag="admin",
    ),
    Route(
        "GET",
        "/v1/admin/ledger/periods/{period_id:id}",
        get_period,
        "One ledger period",
        auth="admin",
        primary=True,
        responses={200: "LedgerPeriod"},
        tag="admin",
    ),
    Route(
        "POST",
        "/v1/admin/ledger/periods/{period_id:id}/advance",
        advance,
        "Run one step of the period's close now: archive the next segment to R2, or finish the close",
        auth="admin",
        primary=True,
        preload=_preload_step,
        responses={200: "LedgerPeriodStep"},
        tag="admin",
    ),
    Route(
        "POST",
        "/v1/admin/ledger/periods/{period_id:id}/verify",
        verify_period,
        "Re-prove a period from its R2 objects (checksums, balanced transfers, account chains, D1's records)",
        auth="admin",
        primary=True,
        query=VERIFY_QUERY,
        responses={200: "LedgerPeriodProof"},
        tag="admin",
    ),
]
