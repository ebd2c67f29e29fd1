"""bench/figures.py draws valid SVG whose plotted points are the figures it was given:
each picture is parsed back, and every dot's position, read through the plot's own axes,
must give the value of the input it came from."""

import json
import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import figures

NS = {"svg": "http://www.w3.org/2000/svg"}


def ledger_results() -> dict:
    rows = []
    for n, seed_rows in ((10, 101010), (1_000, 101011), (100_000, 101012)):
        rows += [
            {
                "operation": "ledger: GET /v1/wallet (whole request, incl. caller look-up)",
                "entries": n,
                "rows_read": [3, 4],
            },
            {"operation": "ledger: balance read (accounts row)", "entries": n, "rows_read": [2, 2]},
            {"operation": "ledger: one debit (transfer + charge row, 1 batch)", "entries": n, "rows_read": [43, 46]},
            {"operation": "seed, no index: SUM(amount) balance", "entries": n, "rows_read": [seed_rows, seed_rows]},
            {"operation": "seed, no index: conditional-insert charge", "entries": n, "rows_read": [seed_rows + 3] * 2},
            {"operation": "seed + index(user_id): SUM(amount) balance", "entries": n, "rows_read": [n + 2, n + 2]},
            {"operation": "seed + index(user_id): conditional-insert charge", "entries": n, "rows_read": [n + 5] * 2},
        ]
    return {"sizes": [10, 1_000, 100_000], "rows": rows}


def search_results() -> dict:
    rows = []
    for n in (1_000, 10_000, 100_000):
        rows.append({"search": "category=tarot", "advisors": n, "limit": 20, "rows_read": [n * 7 // 4, n * 7 // 4 + 2]})
        rows.append({"search": "status=online", "advisors": n, "limit": 20, "rows_read": [105, 105]})
    return {"measured_at": "2026-12-01T23:00Z", "sizes": [1_000, 10_000, 100_000], "rows": rows}


def read_back(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Each series' points, as the dots' positions say through the plot's axes (log-log)."""
    root = ET.parse(path).getroot()  # noqa: S314 - our own file
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    plot = root.find(".//svg:g[@class='plot']", NS)
    assert plot is not None and plot.get("data-x-scale") == "log" and plot.get("data-y-scale") == "log"
    left, top, width, height = map(float, plot.get("data-area").split())
    x_lo, x_hi = (math.log10(float(v)) for v in plot.get("data-x-domain").split())
    y_lo, y_hi = (math.log10(float(v)) for v in plot.get("data-y-domain").split())
    out = {}
    for group in plot.findall("svg:g[@class='series']", NS):
        points = []
        for dot in group.findall("svg:circle", NS):
            cx, cy = float(dot.get("cx")), float(dot.get("cy"))
            x = 10 ** (x_lo + (cx - left) / width * (x_hi - x_lo))
            y = 10 ** (y_lo + (top + height - cy) / height * (y_hi - y_lo))
            points.append((x, y))
        line = group.find("svg:polyline", NS).get("points").split()
        assert [tuple(map(float, p.split(","))) for p in line] == [
            (float(d.get("cx")), float(d.get("cy"))) for d in group.findall("svg:circle", NS)
        ], "the line goes through the dots"
        out[group.get("data-label")] = points
    return out


def close(points: list[tuple[float, float]], expected: list[tuple[float, float]]) -> bool:
    # Positions are written to 0.01 px: on a 640 px decade axis that is well under 0.1 % of a value.
    return len(points) == len(expected) and all(
        math.isclose(x, ex, rel_tol=2e-3) and math.isclose(y, ey, rel_tol=2e-3)
        for (x, y), (ex, ey) in zip(points, expected, strict=True)
    )


def write(tmp_path: Path, name: str, data: dict) -> Path:
    results = tmp_path / "results"
    results.mkdir(exist_ok=True)
    (results / name).write_text(json.dumps(data))
    return results


def test_ledger_pictures_plot_the_larger_end_of_each_range(tmp_path):
    results = write(tmp_path, "ledger_cost.json", ledger_results())
    written = figures.draw(results, tmp_path / "img")
    assert sorted(p.name for p in written) == ["ledger_balance_rows.svg", "ledger_charge_rows.svg"]
    balance = read_back(tmp_path / "img" / "ledger_balance_rows.svg")
    assert close(balance["ours: the accounts row (O(1))"], [(10, 2), (1_000, 2), (100_000, 2)])
    assert close(balance["ours: GET /v1/wallet, the whole request"], [(10, 4), (1_000, 4), (100_000, 4)])
    assert close(balance["seed as written: SUM(amount), no index"], [(10, 101010), (1_000, 101011), (100_000, 101012)])
    assert close(balance["seed + index on user_id: SUM(amount)"], [(10, 12), (1_000, 1002), (100_000, 100002)])
    charge = read_back(tmp_path / "img" / "ledger_charge_rows.svg")
    assert close(charge["ours: one debit (one batch)"], [(10, 46), (1_000, 46), (100_000, 46)])
    assert close(charge["seed + index on user_id: conditional INSERT"], [(10, 15), (1_000, 1005), (100_000, 100005)])
    assert len(charge) == 3


def test_search_picture_has_a_line_per_search_and_the_page_reference(tmp_path):
    results = write(tmp_path, "search_cost.json", search_results())
    figures.draw(results, tmp_path / "img")
    lines = read_back(tmp_path / "img" / "search_rows.svg")
    assert list(lines) == ["category=tarot", "status=online", "a page of 20: limit + 1 rows"]
    assert close(lines["category=tarot"], [(1_000, 1752), (10_000, 17502), (100_000, 175002)])
    assert close(lines["status=online"], [(1_000, 105), (10_000, 105), (100_000, 105)])
    assert close(lines["a page of 20: limit + 1 rows"], [(1_000, 21), (10_000, 21), (100_000, 21)])


def test_every_dot_carries_the_value_it_was_drawn_from(tmp_path):
    results = write(tmp_path, "search_cost.json", search_results())
    figures.draw(results, tmp_path / "img")
    root = ET.parse(tmp_path / "img" / "search_rows.svg").getroot()  # noqa: S314 - our own file
    dots = root.findall(".//svg:g[@data-label='category=tarot']/svg:circle", NS)
    assert [(float(d.get("data-x")), float(d.get("data-y"))) for d in dots] == [
        (1_000, 1752),
        (10_000, 17502),
        (100_000, 175002),
    ]


def test_missing_figures_are_skipped_and_unplottable_ones_refused(tmp_path, capsys):
    assert figures.draw(tmp_path / "nothing", tmp_path / "img") == []
    assert "ledger_cost.json is missing" in capsys.readouterr().out
    bad = search_results()
    bad["rows"][0]["rows_read"] = [0, 0]
    bad["rows"][1]["rows_read"] = [0, 0]
    with pytest.raises(ValueError, match="logarithmic"):
        figures.draw(write(tmp_path, "search_cost.json", bad), tmp_path / "img")
    rows = [r for r in ledger_results()["rows"] if not r["operation"].startswith("ledger: one debit")]
    with pytest.raises(ValueError, match="one debit"):
        figures.draw(write(tmp_path, "ledger_cost.json", {"rows": rows}), tmp_path / "img2")


def test_the_committed_pictures_are_valid_svg():
    committed = sorted((Path(figures.ROOT) / "docs" / "img").glob("*.svg"))
    assert {p.name for p in committed} >= {"ledger_balance_rows.svg", "ledger_charge_rows.svg", "search_rows.svg"}
    for path in committed:
        assert read_back(path), path
