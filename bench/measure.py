"""Sampling requests and D1 statements, and the tables the bench prints.

Per request the Worker reports, in `server-timing` (SERVER_TIMING=timing):
`d1;dur=<ms awaiting D1>;desc="calls=.. rows_read=.. rows_written=.."` and
`py;dur=<ms of the request's own work without D1>`, both on workerd's wall clock
(1 ms steps locally). Latency is measured here, around the dispatch through
`entry.Default` in the same isolate (local_runtime.dispatchFetch).
"""

import re
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from clairvora.db import Database, Statement

_D1 = re.compile(
    r'd1(?:;dur=(?P<dur>[0-9.]+))?;desc="calls=(?P<calls>\d+) rows_read=(?P<read>\d+) '
    r'rows_written=(?P<written>\d+)"'
)
_PY = re.compile(r"(?:^|,\s*)py;dur=(?P<dur>[0-9.]+)")


@dataclass
class Sample:
    status: int
    calls: int
    rows_read: int
    rows_written: int
    d1_ms: float
    py_ms: float | None
    latency_ms: float
    money_calls: int = 0  # D1 calls of the request that wrote a ledger transfer


# D1 calls that wrote a ledger transfer, counted by wrapping the Worker's own
# Database class (the bench runs in the same Pyodide as the Worker, and sends
# one request at a time, so the count belongs to the request being sampled). A
# call counts when one of its `INSERT INTO transfers` inserted a row: a
# conditional one that found nothing to do (a replay or a refusal sent in the
# same batch as a claim, INSERT ... SELECT) moved no money.
_MONEY = {"calls": 0}


def _transfer_inserts(statements: Any) -> list[int]:
    return [i for i, s in enumerate(statements) if "INSERT INTO transfers" in " ".join(s.sql.split())]


def count_money_calls() -> None:
    original_all, original_batch = Database.all, Database.batch

    async def all_(self: Database, statement: Statement) -> Any:
        result = await original_all(self, statement)
        if _transfer_inserts([statement]) and result.changes > 0:
            _MONEY["calls"] += 1
        return result

    async def batch(self: Database, statements: Any) -> Any:
        results = await original_batch(self, statements)
        if any(results[i].changes > 0 for i in _transfer_inserts(statements)):
            _MONEY["calls"] += 1
        return results

    Database.all, Database.batch = all_, batch  # type: ignore[method-assign]


@dataclass
class Row:
    """One line of a result table: an operation at one data size."""

    group: str
    operation: str
    size: str
    samples: list[Sample] = field(default_factory=list)
    note: str = ""
    route: tuple[str, str] | None = None  # (method, pattern) when it is an API route
    money: bool = False  # the operation moves money (target: exactly one D1 call for it)
    series: str | None = None  # rows of one series must read the same rows at every data size
    limit: int | None = None  # page size asked for (search/list targets)

    def values(self, attr: str) -> list[Any]:
        return [getattr(s, attr) for s in self.samples]

    @property
    def statuses(self) -> set[int]:
        return set(self.values("status"))


def parse_server_timing(header: str | None) -> tuple[int, int, int, float, float | None]:
    """(calls, rows_read, rows_written, d1_ms, py_ms) from the Worker's header."""
    if not header:
        raise AssertionError("no server-timing header: run with SERVER_TIMING=timing")
    d1 = _D1.search(header)
    if d1 is None:
        raise AssertionError(f"unexpected server-timing: {header}")
    py = _PY.search(header)
    return (
        int(d1["calls"]),
        int(d1["read"]),
        int(d1["written"]),
        float(d1["dur"] or 0.0),
        float(py["dur"]) if py else None,
    )


async def sample_request(send: Callable[[], Awaitable[Any]]) -> tuple[Sample, Any]:
    _MONEY["calls"] = 0
    started = time.perf_counter()
    resp = await send()
    latency_ms = (time.perf_counter() - started) * 1000
    calls, read, written, d1_ms, py_ms = parse_server_timing(resp.headers.get("server-timing"))
    return Sample(resp.status, calls, read, written, d1_ms, py_ms, latency_ms, _MONEY["calls"]), resp


async def sample_statements(db: Database, statements: list[Statement]) -> tuple[Sample, Any]:
    """A direct D1 call (one statement or one batch) as the seed's designs make it."""
    before = (db.counters.calls, db.counters.rows_read, db.counters.rows_written)
    started = time.perf_counter()
    if len(statements) == 1:
        result: Any = await db.all(statements[0])
    else:
        result = await db.batch(statements)
    latency_ms = (time.perf_counter() - started) * 1000
    c = db.counters
    return Sample(
        200, c.calls - before[0], c.rows_read - before[1], c.rows_written - before[2], latency_ms, None, latency_ms
    ), result


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _span(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}..{hi}"


def _ms(values: list[float | None], q: float) -> str:
    present = [v for v in values if v is not None]
    return f"{percentile(present, q):.2f}" if present else "—"


def _mean_ms(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    return f"{statistics.fmean(present):.2f}" if present else "—"


def table(rows: list[Row]) -> str:
    lines = [
        "| group | operation | data | HTTP | D1 calls | rows read | rows written | py ms mean | py ms p95 "
        "| latency ms p50 | latency ms p95 | n |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not r.samples:
            lines.append(f"| {r.group} | {r.operation} | {r.size} | — | — | — | — | — | — | — | — | 0 |")
            continue
        statuses = ",".join(str(s) for s in sorted(r.statuses))
        lines.append(
            f"| {r.group} | {r.operation} | {r.size} | {statuses} | {_span(r.values('calls'))} "
            f"| {_span(r.values('rows_read'))} | {_span(r.values('rows_written'))} "
            f"| {_mean_ms(r.values('py_ms'))} | {_ms(r.values('py_ms'), 95)} "
            f"| {_ms(r.values('latency_ms'), 50)} | {_ms(r.values('latency_ms'), 95)} | {len(r.samples)} |"
        )
    return "\n".join(lines)


def median(values: list[float]) -> float:
    return statistics.median(values)
