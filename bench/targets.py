"""The issue's targets, checked against the measured rows.

1. every route at most 2 D1 round trips (per request, caller lookup included);
2. every money movement exactly 1 round trip for the movement itself;
3. balance read and per-minute charge: rows read independent of ledger length;
4. advisor search reads at most `limit` + a small constant rows;
5. Python time per request under 1 ms for reads (GET), at the median.
"""

from dataclasses import dataclass

from measure import Row, percentile

SEARCH_SLACK_ROWS = 10
PY_READ_BUDGET_MS = 1.0


@dataclass
class Verdict:
    target: str
    ok: bool
    detail: str


def _max(row: Row, attr: str) -> int:
    return max(row.values(attr))


def evaluate(rows: list[Row], cold: dict[str, float]) -> list[Verdict]:
    measured = [r for r in rows if r.samples]
    api = [r for r in measured if r.route is not None]
    out: list[Verdict] = []

    over = [r for r in api if _max(r, "calls") > 2]
    out.append(Verdict(
        "every route <= 2 D1 round trips", not over,
        "; ".join(f"{r.operation} [{r.size}]: {_max(r, 'calls')} calls" for r in over)
        or f"{len(api)} measured operations, max {max((_max(r, 'calls') for r in api), default=0)} calls"))

    money = [r for r in measured if r.money]
    out.append(Verdict(
        "every money movement is 1 round trip (the movement's batch)",
        all(_max(r, "calls") <= 2 for r in money),
        "; ".join(f"{r.operation} [{r.size}]: {_max(r, 'calls')} calls in all (caller lookup + movement batch"
                  f"{' + more' if _max(r, 'calls') > 2 else ''})" for r in money) or "no money route measured yet"))

    series: dict[str, list[Row]] = {}
    for r in measured:
        if r.series:
            series.setdefault(r.series, []).append(r)
    for name, group in series.items():
        reads = {r.size: _max(r, "rows_read") for r in group}
        # The same lookup reads 1 or 2 rows for different users (seen on local D1,
        # unrelated to ledger length): a one-row spread between users is not growth.
        flat = max(reads.values()) - min(reads.values()) <= 1
        out.append(Verdict(f"{name}: rows read independent of ledger length", flat,
                           ", ".join(f"{size}: {n}" for size, n in reads.items())))

    search = [r for r in measured if r.limit is not None and r.group.startswith("advisors")]
    bad = [r for r in search if _max(r, "rows_read") > r.limit + SEARCH_SLACK_ROWS + _max(r, "calls") * 2]
    out.append(Verdict(
        f"advisor search rows read <= limit + {SEARCH_SLACK_ROWS} (+ caller lookup)", bool(search) and not bad,
        "; ".join(f"{r.operation} [{r.size}] limit {r.limit}: {_max(r, 'rows_read')} rows" for r in bad)
        or (f"{len(search)} searches within budget" if search else "advisor search not on main yet")))

    reads = [r for r in api if r.route and r.route[0] == "GET" and any(s.py_ms is not None for s in r.samples)]
    slow = [r for r in reads if percentile([s.py_ms for s in r.samples if s.py_ms is not None], 50)
            >= PY_READ_BUDGET_MS]
    out.append(Verdict(
        f"Python time per read < {PY_READ_BUDGET_MS} ms (median)", not slow,
        "; ".join(f"{r.operation} [{r.size}]: {percentile([s.py_ms for s in r.samples if s.py_ms is not None], 50):.2f}"
                  " ms" for r in slow) or f"{len(reads)} reads within budget"))

    out.append(Verdict("cold start: Worker import (re-import median)", cold["reimport_median_ms"] < 100,
                       f"{cold['reimport_median_ms']:.1f} ms (first import at boot {cold['boot_import_ms']:.1f} ms)"))
    return out


def table(verdicts: list[Verdict]) -> str:
    lines = ["| target | met | measured |", "|---|---|---|"]
    for v in verdicts:
        lines.append(f"| {v.target} | {'yes' if v.ok else '**no**'} | {v.detail} |")
    return "\n".join(lines)
