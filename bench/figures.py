"""The pictures of docs/BENCHMARKS.md, drawn from the bench's own JSON as hand-written SVG.

    python3 bench/figures.py [--results bench/results] [--out docs/img]

Host-side and standard library only (`make bench` runs it after the bench scripts, so a
fresh machine needs nothing more than `make install`). Inputs, each optional (a missing one
is skipped and said so):

- bench/results/ledger_cost.json (bench/ledger_cost.py --write): rows read per balance read
  and per charge as one account's ledger grows, ours against the seed's design;
- bench/results/search_cost.json (bench/search_growth.py --write): rows read per search page
  as the number of advisors grows, one line per search.

Every plotted point is a `<circle>` carrying its values (`data-x`, `data-y`) at the position
the axes give it; the plot's `<g>` says its scales, domains and area, so the picture can be
read back (tooling_tests/test_figures.py does).
"""

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

ROOT = Path(__file__).resolve().parent.parent
PALETTE = ("#4e79a7", "#e15759", "#f28e2b", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
WIDTH, PLOT_LEFT, PLOT_TOP, PLOT_WIDTH, PLOT_HEIGHT = 760, 78, 58, 640, 300
LEGEND_ROW = 18


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    dashed: bool = False
    color: str | None = None  # else the palette's next


@dataclass
class Chart:
    title: str
    subtitle: str
    x_label: str
    y_label: str
    series: list[Series] = field(default_factory=list)


def _decades(values: list[float], axis: str) -> tuple[int, int]:
    if not values:
        raise ValueError(f"nothing to plot on the {axis} axis")
    if min(values) <= 0:
        raise ValueError(f"a {axis} value of {min(values)} cannot be drawn on a logarithmic axis")
    lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    return lo, hi if hi > lo else lo + 1


def _tick(value: float) -> str:
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def _power(decade: int) -> str:
    return str(10**decade) if decade >= 0 else f"{10.0**decade:g}"


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def svg(chart: Chart) -> str:
    """The chart as an SVG document: log-log axes by decades, a line and a dot per point."""
    xs = [x for s in chart.series for x, _ in s.points]
    ys = [y for s in chart.series for _, y in s.points]
    (x_lo, x_hi), (y_lo, y_hi) = _decades(xs, "x"), _decades(ys, "y")

    def px(x: float) -> float:
        return PLOT_LEFT + (math.log10(x) - x_lo) / (x_hi - x_lo) * PLOT_WIDTH

    def py(y: float) -> float:
        return PLOT_TOP + PLOT_HEIGHT - (math.log10(y) - y_lo) / (y_hi - y_lo) * PLOT_HEIGHT

    columns = 2
    legend_top = PLOT_TOP + PLOT_HEIGHT + 52
    height = legend_top + LEGEND_ROW * math.ceil(len(chart.series) / columns) + 12
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
        f"<title>{escape(chart.title)}</title>",
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text x="{PLOT_LEFT}" y="22" font-size="15" font-weight="bold">{escape(chart.title)}</text>',
        f'<text x="{PLOT_LEFT}" y="40" fill="#555555">{escape(chart.subtitle)}</text>',
        f'<g class="plot" data-x-scale="log" data-y-scale="log" data-x-domain="{_power(x_lo)} {_power(x_hi)}" '
        f'data-y-domain="{_power(y_lo)} {_power(y_hi)}" '
        f'data-area="{PLOT_LEFT} {PLOT_TOP} {PLOT_WIDTH} {PLOT_HEIGHT}">',
        f'<rect x="{PLOT_LEFT}" y="{PLOT_TOP}" width="{PLOT_WIDTH}" height="{PLOT_HEIGHT}" fill="none" stroke="#999999"/>',
    ]
    for d in range(x_lo, x_hi + 1):
        x = _number(px(10**d))
        out.append(f'<line x1="{x}" y1="{PLOT_TOP}" x2="{x}" y2="{PLOT_TOP + PLOT_HEIGHT}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{x}" y="{PLOT_TOP + PLOT_HEIGHT + 16}" text-anchor="middle">{_tick(10**d)}</text>')
    for d in range(y_lo, y_hi + 1):
        y = _number(py(10**d))
        out.append(f'<line x1="{PLOT_LEFT}" y1="{y}" x2="{PLOT_LEFT + PLOT_WIDTH}" y2="{y}" stroke="#e5e5e5"/>')
        out.append(
            f'<text x="{PLOT_LEFT - 6}" y="{y}" text-anchor="end" dominant-baseline="middle">{_tick(10**d)}</text>'
        )
    for i, s in enumerate(chart.series):
        color = s.color or PALETTE[i % len(PALETTE)]
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        path = " ".join(f"{_number(px(x))},{_number(py(y))}" for x, y in s.points)
        out.append(f'<g class="series" data-label={quoteattr(s.label)} stroke="{color}" fill="{color}">')
        out.append(f'<polyline points="{path}" fill="none" stroke-width="2"{dash}/>')
        for x, y in s.points:
            out.append(
                f'<circle cx="{_number(px(x))}" cy="{_number(py(y))}" r="3.5" data-x="{x:g}" data-y="{y:g}">'
                f"<title>{escape(s.label)}: {x:,.0f} -> {y:,.0f}</title></circle>"
            )
        out.append("</g>")
    out.append("</g>")
    out.append(
        f'<text x="{PLOT_LEFT + PLOT_WIDTH / 2:g}" y="{PLOT_TOP + PLOT_HEIGHT + 36}" text-anchor="middle">'
        f"{escape(chart.x_label)}</text>"
    )
    mid = PLOT_TOP + PLOT_HEIGHT / 2
    out.append(
        f'<text x="18" y="{mid:g}" text-anchor="middle" transform="rotate(-90 18 {mid:g})">{escape(chart.y_label)}</text>'
    )
    for i, s in enumerate(chart.series):
        x = PLOT_LEFT + (i % columns) * (PLOT_WIDTH / columns)
        y = legend_top + (i // columns) * LEGEND_ROW
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        color = PALETTE[i % len(PALETTE)]
        out.append(
            f'<line x1="{x:g}" y1="{y - 4}" x2="{x + 22:g}" y2="{y - 4}" stroke="{color}" stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{x + 28:g}" y="{y}">{escape(s.label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --- what is drawn from which figures -------------------------------------------------------

LEDGER_BALANCE = (
    ("ours: the accounts row (O(1))", "ledger: balance read (accounts row)"),
    ("ours: GET /v1/wallet, the whole request", "ledger: GET /v1/wallet (whole request, incl. caller look-up)"),
    ("seed as written: SUM(amount), no index", "seed, no index: SUM(amount) balance"),
    ("seed + index on user_id: SUM(amount)", "seed + index(user_id): SUM(amount) balance"),
)
LEDGER_CHARGE = (
    ("ours: one debit (one batch)", "ledger: one debit (transfer + charge row, 1 batch)"),
    ("seed as written: conditional INSERT, no index", "seed, no index: conditional-insert charge"),
    ("seed + index on user_id: conditional INSERT", "seed + index(user_id): conditional-insert charge"),
)


def _ledger_series(rows: list[dict], wanted: tuple[tuple[str, str], ...]) -> list[Series]:
    out = []
    for label, operation in wanted:
        # The larger of a range: a debit's random ids put it a row or two either way.
        points = [(float(r["entries"]), float(r["rows_read"][1])) for r in rows if r["operation"] == operation]
        if not points:
            raise ValueError(f"ledger_cost.json has no rows for {operation!r}")
        out.append(Series(label, sorted(points)))
    return out


def ledger_charts(data: dict) -> dict[str, Chart]:
    rows = data["rows"]
    subtitle = "D1 rows_read per operation, one account's history growing (bench/ledger_cost.py)"
    return {
        "ledger_balance_rows.svg": Chart(
            "Rows read per balance read", subtitle, "ledger entries in the account", "rows read",
            _ledger_series(rows, LEDGER_BALANCE),
        ),
        "ledger_charge_rows.svg": Chart(
            "Rows read per per-minute charge", subtitle, "ledger entries in the account", "rows read",
            _ledger_series(rows, LEDGER_CHARGE),
        ),
    }  # fmt: skip


def search_charts(data: dict) -> dict[str, Chart]:
    rows = data["rows"]
    series = []
    for search in dict.fromkeys(r["search"] for r in rows):
        points = sorted((float(r["advisors"]), float(r["rows_read"][1])) for r in rows if r["search"] == search)
        series.append(Series(search, points))
    sizes = sorted({float(r["advisors"]) for r in rows})
    series.append(Series("a page of 20: limit + 1 rows", [(n, 21.0) for n in sizes], dashed=True, color="#555555"))
    chart = Chart(
        "Rows read per advisor search page",
        f"GET /v1/advisors, D1 rows_read per page as advisors grow (bench/search_growth.py, {data.get('measured_at', '')})",
        "advisors",
        "rows read",
        series,
    )
    return {"search_rows.svg": chart}


SOURCES = (("ledger_cost.json", ledger_charts), ("search_cost.json", search_charts))


def draw(results: Path, out: Path) -> list[Path]:
    """Every picture whose figures exist; returns the files written."""
    written = []
    for name, charts in SOURCES:
        source = results / name
        if not source.exists():
            print(f"figures: {source} is missing (run `make bench`); its pictures are left as they are")
            continue
        for filename, chart in charts(json.loads(source.read_text())).items():
            out.mkdir(parents=True, exist_ok=True)
            target = out / filename
            target.write_text(svg(chart))
            written.append(target)
            print(f"figures: wrote {target}")
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    draw(args.results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
