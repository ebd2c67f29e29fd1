"""The short CI version of bench/load.py: a few seconds of concurrent traffic
over HTTP against the scratch server, then the invariants."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import load

CLIENTS = 2
SECONDS = 4


def test_short_load_run_keeps_every_invariant(scratch):
    report = load.run(scratch, clients=CLIENTS, seconds=SECONDS)
    print(f"\nload: {report}")
    assert report["requests"] >= CLIENTS, report
    assert report["invariants"] == {k: True for k in report["invariants"]}, report
    assert report["statuses"].get(201, 0) >= 1, "no deposit went through"
    # Nothing in the mix is a caller's mistake: a 4xx here is a bug in the Worker or in the script.
    assert report["errors_by_status"] == {}, report
    assert report["per_operation"].get("reading_accept", {}).get("n", 0) >= 1, "no reading was accepted"
