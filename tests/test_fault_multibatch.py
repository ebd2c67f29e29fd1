"""A D1 fault between the batches of one heartbeat.

A heartbeat that finds more minutes due than one batch holds (15) charges them
in several batches, each its own transaction. With a 1-second billing period
(a Worker var replaced for these requests only), a heartbeat 39 s after the
accept owes minutes 2..40: three batches (15 + 15 + 9) after the caller and
reading read, 4 D1 calls. Failing each call before and after it runs must
leave the reading at a batch boundary (1, 16, 31 or 40 minutes billed, every
one of them paid exactly once), answer 503 with Retry-After, and the same
heartbeat sent again must bill the rest: 40 minutes, once each."""

import time
from typing import Any

import pytest

from clairvora.billing import MAX_MINUTES_PER_BATCH
from clairvora.db import sql
from market_support import assert_ledger_consistent, fetch_with_env, market_pair
from support import Resp, database, unique

OVERRIDES = {"BILLING_PERIOD_SECONDS": "1"}
RATE_CENTS_PER_MINUTE = 50
FUNDS_CENTS = 5000
MINUTES_DUE = 40  # minutes 1..40 begun 39 s after the accept
BATCH_BOUNDARIES = (1, 1 + MAX_MINUTES_PER_BATCH, 1 + 2 * MAX_MINUTES_PER_BATCH, MINUTES_DUE)
HEARTBEAT_CALLS = 4  # caller + reading (one batch), then three charge batches


async def send(method: str, path: str, token: str, headers: dict[str, str], body: Any = None) -> Resp:
    """One request through the runtime's dispatch with OVERRIDES in its env."""
    return await fetch_with_env(OVERRIDES, method, path, token=token, json_body=body, headers=headers)


async def active_one_second_reading() -> tuple[str, str, int, int]:
    """(client token, reading id, client id, accepted_at_ms) of a reading billed per second."""
    client, client_id, advisor, advisor_id = await market_pair(rate=RATE_CENTS_PER_MINUTE, funds=FUNDS_CENTS)
    t0 = int(time.time() * 1000)
    r = await send(
        "POST",
        "/v1/readings",
        client.token,
        {"x-test-now-ms": str(t0), "idempotency-key": unique("k")},
        {"advisor_id": str(advisor_id), "channel": "chat"},
    )
    assert r.status == 201 and r.json()["billing_period_seconds"] == 1, r.text
    rid = r.json()["id"]
    r = await send("POST", f"/v1/readings/{rid}/accept", advisor.token, {"x-test-now-ms": str(t0)})
    assert r.status == 200 and r.json()["billed_minutes"] == 1, r.text
    return client.token, rid, client_id, t0


async def billed_state(rid: str, client_id: int) -> tuple[int, list[int], int]:
    """(billed_minutes, the charged minutes in order, wallet balance)."""
    db = database()
    reading = await db.first(sql("SELECT billed_minutes FROM readings WHERE id = ?", int(rid)))
    charges = await db.all(sql("SELECT minute FROM reading_charges WHERE reading_id = ? ORDER BY minute", int(rid)))
    wallet = await db.first(
        sql("SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet'", client_id)
    )
    return int(reading["billed_minutes"]), [int(r["minute"]) for r in charges.rows], int(wallet["balance_cents"])


async def test_a_clean_multi_batch_heartbeat_makes_four_calls():
    token, rid, client_id, t0 = await active_one_second_reading()
    r = await send("POST", f"/v1/readings/{rid}/heartbeat", token, {"x-test-now-ms": str(t0 + 39_000)})
    assert r.status == 200 and r.json()["billed_minutes"] == MINUTES_DUE, r.text
    assert f"calls={HEARTBEAT_CALLS} " in r.headers["server-timing"], r.headers["server-timing"]
    billed, minutes, wallet = await billed_state(rid, client_id)
    assert (billed, minutes, wallet) == (
        MINUTES_DUE,
        list(range(1, MINUTES_DUE + 1)),
        FUNDS_CENTS - MINUTES_DUE * RATE_CENTS_PER_MINUTE,
    )


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("position", range(1, HEARTBEAT_CALLS + 1))
async def test_a_fault_at_any_call_stops_at_a_batch_boundary_and_the_retry_bills_the_rest(position, when):
    token, rid, client_id, t0 = await active_one_second_reading()
    beat = {"x-test-now-ms": str(t0 + 39_000)}
    fault = str(position) if when == "before" else f"{position};after"
    r = await send("POST", f"/v1/readings/{rid}/heartbeat", token, {**beat, "x-test-d1-fault": fault})
    assert r.status == 503 and r.headers.get("retry-after"), (fault, r.status, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")

    billed, minutes, wallet = await billed_state(rid, client_id)
    # Batches that ran are whole; the failed one left nothing.
    assert billed in BATCH_BOUNDARIES, (fault, billed)
    assert minutes == list(range(1, billed + 1)) and wallet == FUNDS_CENTS - billed * RATE_CENTS_PER_MINUTE
    ran = position - 1 + (when == "after")  # D1 calls that completed
    assert billed == BATCH_BOUNDARIES[max(0, ran - 1)], (fault, billed)

    r = await send("POST", f"/v1/readings/{rid}/heartbeat", token, beat)
    assert r.status == 200 and r.json()["billed_minutes"] == MINUTES_DUE, r.text
    billed, minutes, wallet = await billed_state(rid, client_id)
    assert minutes == list(range(1, MINUTES_DUE + 1))
    assert wallet == FUNDS_CENTS - MINUTES_DUE * RATE_CENTS_PER_MINUTE
    await assert_ledger_consistent()
