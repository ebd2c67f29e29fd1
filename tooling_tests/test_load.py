"""The short CI version of bench/load.py: a few seconds of concurrent traffic
over HTTP against the scratch server, then the invariants."""

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import load

CLIENTS = 2
SECONDS = 4
# The session server's first client and advisor belong to the contract fuzzer, which may
# take that advisor offline or reprice it with a valid If-Match; the load run uses the others.
FUZZED = 1


class _OwnActors:
    """The session server, with only the actors no other test touches in its world."""

    def __init__(self, scratch: Any) -> None:
        self._scratch = scratch
        world = scratch.world
        self.world = {**world, "clients": world["clients"][FUZZED:], "advisors": world["advisors"][FUZZED:]}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scratch, name)


def test_short_load_run_keeps_every_invariant(scratch):
    report = load.run(_OwnActors(scratch), clients=CLIENTS, seconds=SECONDS)
    print(f"\nload: {report}; proxy retries {scratch.proxy.retries}, nudges {scratch.proxy.nudges}")
    assert report["requests"] >= CLIENTS, report
    assert report["invariants"] == {k: True for k in report["invariants"]}, report
    assert report["statuses"].get(201, 0) >= 1, "no deposit went through"
    # Nothing in the mix is a caller's mistake: a 4xx here is a bug in the Worker or in the script.
    assert report["errors_by_status"] == {}, report
    assert report["per_operation"].get("reading_accept", {}).get("n", 0) >= 1, "no reading was accepted"
