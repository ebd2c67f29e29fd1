"""Injected D1 faults at every call position of the payout money paths (the
route, the webhook, the cron's clearance and resend), failing before and
after the call ran. Each time: a retryable answer or a success the path
absorbed itself; nothing half-written (the state is the one before, the one
after, or, for a payout, its consistent `requested` claim: money in transit,
PayPal maybe holding it); the retry completes it exactly once; the books
balance. See tests/test_fault_injection.py for the switch itself."""

import json
from typing import Any

import js
import local_runtime
import pytest
from pyodide.ffi import to_js

from clairvora import clearance, payout_cron
from clairvora.db import Database, TransientD1Error, sql
from clairvora.faults import plan_from_header
from payout_support import (
    DAY_MS,
    WEBHOOK,
    balances,
    cleared_advisor,
    deliver_webhooks,
    earn,
    now_ms,
    payout_row,
    request_payout,
    settings,
)
from support import database, unique
from world import actor, invariant_violations, make_advisor

control = local_runtime.paypalControl


async def _post(
    path: str, headers: dict[str, str], body: str, fault: str | None
) -> tuple[int, dict[str, str], Any, int]:
    if fault:
        headers = {**headers, "x-test-d1-fault": fault}
    init = to_js(
        {"method": "POST", "headers": to_js(headers, dict_converter=js.Object.fromEntries), "body": body},
        dict_converter=js.Object.fromEntries,
    )
    result = await local_runtime.dispatchFetch(js.Request.new(local_runtime.baseUrl + path, init))
    text = str(await result.response.text())
    out = {k.lower(): v for k, v in result.response.headers.entries()}
    return int(result.response.status), out, json.loads(text) if text else None, int(result.calls)


async def _payout_state(advisor_id: int) -> tuple[Any, ...]:
    rows = (
        await database().all(sql("SELECT status FROM payouts WHERE advisor_id = ? ORDER BY created_at_ms", advisor_id))
    ).rows
    b = await balances(advisor_id)
    return b["cleared"], tuple(r["status"] for r in rows)


async def _drain() -> None:
    """Deliver what the stand-in queued (earlier payouts' notifications), so later tests see only theirs."""
    await deliver_webhooks()


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("tag", ["", "invalid"])
async def test_a_payout_request_fails_cleanly_at_every_call_position(tag: str, when: str):
    """Both D1 calls of a payout request (the claim with the caller lookup, then
    the record of PayPal's answer), for a payout PayPal accepts and for one it
    refuses (its return is the second call's movement)."""
    probe, _earned, _email = await cleared_advisor(15, tag=tag)
    key = unique("pfk")
    headers = {"authorization": f"Bearer {probe.token}", "content-type": "application/json", "idempotency-key": key}
    status, _h, body, calls = await _post("/v1/advisors/me/payouts", headers, "{}", "99")
    assert status == (201 if not tag else 502), body
    assert calls == 2, calls
    for position in range(1, calls + 1):
        a, earned, _email = await cleared_advisor(15, tag=tag)
        untouched = await _payout_state(a.id)
        expected = (0, ("sent",)) if not tag else (earned, ("failed",))
        claimed = (0, ("requested",))
        key = unique("pfk")
        headers = {"authorization": f"Bearer {a.token}", "content-type": "application/json", "idempotency-key": key}
        where = f"{tag or 'sent'}: call {position}/{calls} failing {when} it ran"
        fault = f"{position}" if when == "before" else f"{position};after"
        status, out, body, _calls = await _post("/v1/advisors/me/payouts", headers, "{}", fault)
        if status not in (201, 502):
            assert status == 503 and out.get("retry-after"), f"{where}: {status} {body}"
        state = await _payout_state(a.id)
        assert state in (untouched, claimed, expected), f"{where}: half-written {state}"
        status, _out, body, retry_calls = await _post("/v1/advisors/me/payouts", headers, "{}", None)
        assert retry_calls <= 2, f"{where}: the retry (a resume or a replay) took {retry_calls} calls"
        payout = body if not tag else body["payout"]
        assert status == (201 if not tag else 502), f"{where}: retry {status} {body}"
        assert payout["status"] == ("sent" if not tag else "failed"), f"{where}: retry {status} {body}"
        assert await _payout_state(a.id) == expected, where
        again, out, replay, _calls = await _post("/v1/advisors/me/payouts", headers, "{}", None)
        assert (again, replay) == (status, body) and out.get("idempotent-replayed") == "true", where
        assert await _payout_state(a.id) == expected, where
        assert sum(1 for b in control.received("/v1/payments/payouts") if payout["id"] in b["body"]) <= 2, where
    await _drain()
    assert not {k: v for k, v in (await invariant_violations()).items() if v}


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("tag", ["", "fail"])
async def test_a_notification_fails_cleanly_at_every_call_position(tag: str, when: str):
    async def sent() -> tuple[Any, str, dict]:
        await _drain()
        a, _earned, _email = await cleared_advisor(15, tag=tag)
        r = await request_payout(a)
        assert r.status == 201, r.text
        (delivery,) = [d for d in control.takeWebhooks() if r.json()["id"] in d["body"]]
        return a, r.json()["id"], delivery

    expected_status = "succeeded" if not tag else "failed"
    a, pid, delivery = await sent()
    headers = {k: str(v) for k, v in dict(delivery["headers"]).items()}
    status, _h, body, calls = await _post(WEBHOOK, headers, str(delivery["body"]), "99")
    assert status == 200 and (await payout_row(pid))["status"] == expected_status, body
    for position in range(1, calls + 1):
        a, pid, delivery = await sent()
        headers = {k: str(v) for k, v in dict(delivery["headers"]).items()}
        where = f"{tag or 'succeeded'}: call {position}/{calls} failing {when} it ran"
        fault = f"{position}" if when == "before" else f"{position};after"
        status, out, body, _calls = await _post(WEBHOOK, headers, str(delivery["body"]), fault)
        assert status == 503 and out.get("retry-after"), f"{where}: {status} {body}"
        assert (await payout_row(pid))["status"] in ("sent", expected_status), where
        for _retry in range(2):  # PayPal delivers again: applied once, then a duplicate
            status, _out, body, _calls = await _post(WEBHOOK, headers, str(delivery["body"]), None)
            assert status == 200, f"{where}: {body}"
        assert body["outcome"] == "duplicate", where
        assert (await payout_row(pid))["status"] == expected_status, where
        cleared = (await balances(a.id))["cleared"]
        assert cleared == (0 if not tag else (await payout_row(pid))["amount_cents"]), where
    assert not {k: v for k, v in (await invariant_violations()).items() if v}


async def _faulty(fault: str) -> Database:
    db = database()
    db.faults = plan_from_header(fault)
    return db


@pytest.mark.parametrize("when", ["before", "after"])
async def test_the_clearance_fails_cleanly_at_every_call_position(when: str):
    for position in (1, 2):
        a = await make_advisor(await actor("pfc"))
        earned = await earn(a.id, 10, now_ms() - 8 * DAY_MS)
        fault = f"{position}" if when == "before" else f"{position};after"
        with pytest.raises(TransientD1Error):  # the cron logs it; the next run plans again
            await clearance.clear_advisors(await _faulty(fault), settings(), [a.id], now_ms(), 45)
        assert (await balances(a.id))["cleared"] in (0, earned), f"call {position} {when}"
        await clearance.clear_advisors(database(), settings(), [a.id], now_ms(), 45)
        await clearance.clear_advisors(database(), settings(), [a.id], now_ms(), 45)
        b = await balances(a.id)
        assert (b["cleared"], b["pending"]) == (earned, 0), f"call {position} {when}: {b}"


@pytest.mark.parametrize("when", ["before", "after"])
async def test_the_cron_resend_fails_cleanly(when: str):
    a, _earned, _email = await cleared_advisor(15)
    control.nextCreate("drop")
    r = await request_payout(a)
    assert r.status == 202, r.text
    pid = r.json()["id"]
    row = await payout_row(pid)
    fault = "1" if when == "before" else "1;after"
    # The settle batch is retried once on a transient error: the cron run absorbs the fault.
    await payout_cron.resume_payout(await _faulty(fault), settings(), row, now_ms() + 120_000)
    after = await payout_row(pid)
    assert after["status"] == "sent", after
    await payout_cron.resume_payout(database(), settings(), after, now_ms() + 3 * 3600_000)
    await _drain()
    assert (await payout_row(pid))["status"] == "succeeded"
    assert not {k: v for k, v in (await invariant_violations()).items() if v}
