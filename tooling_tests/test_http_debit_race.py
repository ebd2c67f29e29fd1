"""50 simultaneous debits over HTTP against a wallet that covers exactly 20.

A client has one open reading at a time and each minute of it is charged
once by key, so the contract's only repeated debit of one wallet is the
per-minute charge. With a 1-second billing period (a Worker var, overridden
for this scratch server only) minute k+1 begins k seconds after the accept, so
50 heartbeats stamped 1..50 s after it ask, all at once, for 50 debits
(minutes 2..51) from a wallet that holds exactly 20 minutes after the accept
paid minute 1. Everything goes through the served Worker over real HTTP,
from 50 threads released together: the deposit that funds the wallet, the
request, the accept, the race, the reads and the ledger check. Only the SQL
in each charge batch stands between the race and an overdraft."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from scratch import Scratch

RATE_CENTS_PER_MINUTE = 100
RACERS = 50
COVERED_MINUTES = 20  # what the wallet pays after the accept's minute 1
PERIOD_MS = 1000
# A racer that meets a 503 retries as a real client would (Retry-After), a bounded number of times.
MAX_RETRIES_PER_RACER = 5
REQUEST_TIMEOUT_S = 30  # the whole race takes 1-4 s on 2 busy cores


@pytest.fixture(scope="module")
def race_server():
    server = Scratch(
        str(RATE_CENTS_PER_MINUTE),
        setup="tooling_tests/race_world.py",
        worker_vars={"BILLING_PERIOD_SECONDS": str(PERIOD_MS // 1000)},
    )
    try:
        yield server
    finally:
        server.cleanup()


def _call(server: Scratch, method: str, path: str, token: str, body: Any = None, **headers: str) -> tuple[int, Any]:
    status, _timing, reply = _call_timed(server, method, path, token, body, **headers)
    return status, reply


def _call_timed(
    server: Scratch, method: str, path: str, token: str, body: Any = None, **headers: str
) -> tuple[int, str, Any]:
    status, out_headers, raw = server.request(method, path, body, token, headers, timeout_s=REQUEST_TIMEOUT_S)
    if status >= 400:
        assert out_headers.get("content-type", "").startswith("application/problem+json"), raw
    return status, out_headers.get("server-timing", ""), json.loads(raw) if raw else None


def _heartbeat(
    server: Scratch, reading_id: str, token: str, at_ms: int, start: threading.Barrier
) -> tuple[list[int], list[str]]:
    start.wait()
    statuses, timings = [], []
    for _ in range(MAX_RETRIES_PER_RACER + 1):
        status, timing, _body = _call_timed(
            server, "POST", f"/v1/readings/{reading_id}/heartbeat", token, {}, **{"x-test-now-ms": str(at_ms)}
        )
        statuses.append(status)
        timings.append(timing)
        if status != 503:
            break
    return statuses, timings


def test_fifty_simultaneous_heartbeat_debits_exactly_twenty_land(race_server):
    world = race_server.world
    client, advisor, admin = world["client"]["token"], world["advisor"]["token"], world["admin"]["token"]

    funds_cents = (1 + COVERED_MINUTES) * RATE_CENTS_PER_MINUTE
    status, deposit = _call(
        race_server,
        "POST",
        "/v1/wallet/deposits",
        client,
        {
            "amount_cents": funds_cents,
            "opaque_data": {"data_descriptor": "COMMON.ACCEPT.INAPP.PAYMENT", "data_value": "tok_approved"},
        },
        **{"idempotency-key": "race-deposit-1"},
    )
    assert status == 201, deposit
    status, reading = _call(
        race_server,
        "POST",
        "/v1/readings",
        client,
        {"advisor_id": world["advisor"]["id"], "channel": "chat"},
        **{"idempotency-key": "race-reading-1"},
    )
    assert status == 201, reading
    reading_id = reading["id"]
    accepted_at_ms = int(time.time() * 1000)
    status, accepted = _call(
        race_server,
        "POST",
        f"/v1/readings/{reading_id}/accept",
        advisor,
        {},
        **{"x-test-now-ms": str(accepted_at_ms)},
    )
    assert status == 200, accepted
    assert accepted["billed_minutes"] == 1

    # Minute k+1 begins k periods after the accept: racer k asks for minutes 2..k+1.
    start = threading.Barrier(RACERS)
    with ThreadPoolExecutor(max_workers=RACERS) as pool:
        futures = [
            pool.submit(
                _heartbeat,
                race_server,
                reading_id,
                client if k % 2 else advisor,  # both participants heartbeat
                accepted_at_ms + k * PERIOD_MS,
                start,
            )
            for k in range(1, RACERS + 1)
        ]
        outcomes = [f.result() for f in futures]
    print("\n" + "\n".join(t for _s, ts in outcomes for t in ts))
    finals = [statuses[-1] for statuses, _t in outcomes]
    assert all(s == 200 for s in finals), outcomes

    status, after = _call(race_server, "GET", f"/v1/readings/{reading_id}", client)
    assert status == 200, after
    assert after["status"] == "ended" and after["end_reason"] == "insufficient_funds", after
    assert after["billed_minutes"] == 1 + COVERED_MINUTES, after

    status, wallet = _call(race_server, "GET", "/v1/wallet", client)
    assert status == 200 and wallet["available_cents"] == 0, wallet
    status, page = _call(race_server, "GET", "/v1/wallet/transactions?limit=100", client)
    assert status == 200, page
    entries = page["items"]
    charges = [e for e in entries if e["kind"] == "reading_charge"]
    # Exactly 20 of the racers' 50 debits landed (plus the accept's minute 1), each one full minute.
    assert len(charges) == 1 + COVERED_MINUTES, entries
    assert all(e["amount_cents"] == -RATE_CENTS_PER_MINUTE for e in charges), charges
    assert min(e["balance_after_cents"] for e in entries) == 0, entries
    assert sum(e["amount_cents"] for e in entries) == 0, entries

    status, check = _call(race_server, "GET", "/v1/admin/ledger/check", admin)
    assert status == 200 and check["ok"] is True, check
    retried = sum(len(statuses) - 1 for statuses, _t in outcomes)
    print(f"\nhttp debit race: {RACERS} heartbeats, {len(charges) - 1} minutes charged by them, {retried} 503 retries")
