"""A bounded concurrent load run over HTTP against the local runtime (localhost only).

    .venv/bin/python bench/load.py [--clients 8] [--seconds 30]

Starts a scratch server (fresh D1, the Worker over HTTP; tooling_tests/scratch.py)
with N funded clients, then N threads each loop until the deadline over a mix of
deposits (through the Authorize.Net stand-in), whole readings (request, the
client's own advisor accepts, heartbeats from both sides, end) and reads (wallet, transactions, advisors,
profile). Then the invariants: the admin ledger check is clean, and every
client's wallet equals its funding plus its approved deposits minus what its
readings were charged. Prints requests, errors by status, p50/p95 latency per
operation, and the invariant results. tooling_tests/test_load.py runs a short
version in CI.
"""

import argparse
import json
import math
import random
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tooling_tests"))

from scratch import Scratch

DEPOSIT_CENTS = 700
MIX = (("deposit", 2), ("reading", 2), ("read", 6))


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter = field(default_factory=Counter)
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    deposited: Counter = field(default_factory=Counter)  # client id -> approved cents

    def record(self, op: str, status: int, elapsed_ms: float) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.latencies_ms[op].append(elapsed_ms)


def _timed(
    tally: Tally,
    op: str,
    server: Scratch,
    method: str,
    path: str,
    token: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    start = time.perf_counter()
    status, _headers, raw = server.request(method, path, body, token=token, headers=headers)
    tally.record(op, status, (time.perf_counter() - start) * 1000)
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def _has(server: Scratch, method: str, path: str) -> bool:
    status, _h, raw = server.request(method, path, token=server.world["admin"]["token"])
    return not (status == 404 and b"route_not_found" in raw) and status != 405


def _reading(server: Scratch, client: dict[str, str], advisor: dict[str, str], tally: Tally, key: str) -> None:
    """One whole reading: request, the advisor accepts (minute 1 is charged), a heartbeat
    from each side, and the client ends it (minutes begun are billed)."""
    status, reading = _timed(
        tally,
        "reading_request",
        server,
        "POST",
        "/v1/readings",
        client["token"],
        {"advisor_id": advisor["id"], "channel": "chat"},
        {"idempotency-key": key},
    )
    if status != 201 or not reading:
        return
    path = f"/v1/readings/{reading['id']}"
    status, _ = _timed(tally, "reading_accept", server, "POST", path + "/accept", advisor["token"], {})
    if status != 200:
        return
    _timed(tally, "heartbeat", server, "POST", path + "/heartbeat", client["token"], {})
    _timed(tally, "heartbeat", server, "POST", path + "/heartbeat", advisor["token"], {})
    _timed(tally, "reading_end", server, "POST", path + "/end", client["token"], {})


def _client_loop(
    server: Scratch,
    client: dict[str, str],
    advisor: dict[str, str],
    deadline: float,
    tally: Tally,
    seed: int,
    readings: bool,
) -> None:
    rng = random.Random(seed)
    token = client["token"]
    ops = [op for op, weight in MIX for _ in range(weight) if op != "reading" or readings]
    n = 0
    while time.monotonic() < deadline:
        n += 1
        op = rng.choice(ops)
        if op == "deposit":
            body = {
                "amount_cents": DEPOSIT_CENTS,
                "opaque_data": {
                    "data_descriptor": "COMMON.ACCEPT.INAPP.PAYMENT",
                    "data_value": f"tok_approved_{seed}x{n}",
                },
            }
            status, _ = _timed(
                tally,
                "deposit",
                server,
                "POST",
                "/v1/wallet/deposits",
                token,
                body,
                {"idempotency-key": f"load-{seed}-{n}"},
            )
            if status == 201:
                with tally.lock:
                    tally.deposited[client["id"]] += DEPOSIT_CENTS
        elif op == "reading":
            _reading(server, client, advisor, tally, f"load-{seed}-{n}")
        else:
            path = rng.choice(("/v1/wallet", "/v1/wallet/transactions?limit=20", "/v1/advisors?limit=20", "/v1/me"))
            _timed(tally, "read", server, "GET", path, token)


def _available(server: Scratch, token: str) -> int:
    _status, _h, raw = server.request("GET", "/v1/wallet", token=token)
    return int(json.loads(raw)["available_cents"])


def _charged_cents(server: Scratch, token: str) -> int:
    """What the client's readings were charged, from its own ledger entries (reading_charge legs)."""
    total, cursor = 0, None
    for _ in range(1000):
        path = "/v1/wallet/transactions?limit=100" + (f"&cursor={cursor}" if cursor else "")
        _status, _h, raw = server.request("GET", path, token=token)
        page = json.loads(raw)
        total += sum(-e["amount_cents"] for e in page["items"] if e["kind"] in ("reading_charge",))
        total -= sum(e["amount_cents"] for e in page["items"] if e["kind"] in ("reading_refund",))
        cursor = page["next_cursor"]
        if cursor is None:
            return total
    raise AssertionError("transactions did not end")


def _percentile(values: list[float], pct: int) -> float:
    """Nearest-rank percentile: the smallest value with at least pct% of values at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def run(server: Scratch, *, clients: int, seconds: float) -> dict[str, Any]:
    """Drive the load; return the figures and the invariant results."""
    world_clients = server.world["clients"][:clients]
    assert len(world_clients) == clients, "start the scratch server with enough clients"
    # Each client reads with its own advisor: an advisor holds one reading at a time.
    advisors = server.world["advisors"][:clients]
    assert len(advisors) == clients, "start the scratch server with an advisor per client"
    readings = _has(server, "GET", "/v1/readings")
    before = {c["id"]: (_available(server, c["token"]), _charged_cents(server, c["token"])) for c in world_clients}
    tally = Tally()
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(target=_client_loop, args=(server, c, advisors[i], deadline, tally, i, readings))
        for i, c in enumerate(world_clients)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started

    invariants: dict[str, bool] = {}
    status, _h, raw = server.request("GET", "/v1/admin/ledger/check", token=server.world["admin"]["token"])
    invariants["ledger_check_ok"] = status == 200 and json.loads(raw)["ok"] is True
    wallets_ok = True
    for c in world_clients:
        available_before, charged_before = before[c["id"]]
        charged = _charged_cents(server, c["token"]) - charged_before
        wallets_ok &= _available(server, c["token"]) == available_before + tally.deposited[c["id"]] - charged
    invariants["wallet_moved_by_exactly_its_deposits_and_charges"] = wallets_ok
    invariants["no_5xx"] = not any(s >= 500 for s in tally.statuses)

    all_ms = sorted(ms for v in tally.latencies_ms.values() for ms in v)
    requests = len(all_ms)
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        # wrangler dev's proxy, not the Worker (docs/RUNTIME.md): its 503s re-sent, parked reads released.
        "wrangler_proxy": {"retries": server.proxy.retries, "nudges": server.proxy.nudges},
        "requests": requests,
        "requests_per_s": round(requests / elapsed, 1) if elapsed else 0,
        "statuses": dict(sorted(tally.statuses.items())),
        "errors_by_status": {s: n for s, n in sorted(tally.statuses.items()) if s >= 400},
        "p50_ms": round(statistics.median(all_ms), 1) if all_ms else None,
        "p95_ms": round(_percentile(all_ms, 95), 1) if all_ms else None,
        "per_operation": {
            op: {
                "n": len(v),
                "p50_ms": round(statistics.median(v), 1),
                "p95_ms": round(_percentile(v, 95), 1),
            }
            for op, v in sorted(tally.latencies_ms.items())
        },
        "readings_routes": readings,
        "invariants": invariants,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    server = Scratch(str(args.clients))
    try:
        report = run(server, clients=args.clients, seconds=args.seconds)
    finally:
        server.cleanup()
    print(json.dumps(report, indent=2))
    return 0 if all(report["invariants"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
