"""Property test: random interleavings of deposits (approved, declined, held),
their retries, per-minute debits, admin refunds, gateway reversals and
resolutions, and webhook replays, against a simple model; after EVERY step the
wallet equals the model and every reconciliation invariant holds.

Plain `def` test (Hypothesis drives it), each step run with run_sync on the
real runtime and real local D1."""

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyodide.ffi import run_sync

from clairvora import reconcile
from clairvora.db import TriggerAbort
from money_support import (
    admin_client,
    balance,
    charge_minute_statements,
    make_advisor,
    start_reading,
    user_with_wallet,
)
from support import database, unique
from test_deposits import deposit_body
from webhook_support import event, post_event

RATE = 170  # advisor 119, platform 51 at 30 %

deposit = st.tuples(
    st.just("deposit"),
    st.integers(500, 3000),
    st.sampled_from(["tok_approved", "tok_approved", "tok_declined", "tok_held"]),
)
retry = st.tuples(st.just("retry_deposit"), st.integers(0, 7))
debit = st.tuples(st.just("debit"), st.integers(1, 4))
refund = st.tuples(st.just("refund"), st.integers(1, 400))
reverse = st.tuples(st.just("reverse"), st.integers(0, 7), st.sampled_from(["refund", "void"]), st.integers(1, 3000))
resolve = st.tuples(st.just("resolve_held"), st.integers(0, 7), st.sampled_from(["approve", "decline"]))
replay = st.tuples(st.just("replay_webhook"), st.integers(0, 7))
steps = st.lists(st.one_of(deposit, retry, debit, refund, reverse, resolve, replay), min_size=2, max_size=7)


class Model:
    def __init__(self) -> None:
        self.balance = 0
        self.minutes = 0
        self.charged = 0
        self.refunded = 0
        self.deposits: list[dict[str, Any]] = []  # {key, body, status, reply, id, amount, reversed, trans_id}
        self.webhooks: list[str] = []


async def _setup() -> dict[str, Any]:
    db = database()
    client_id, client = await user_with_wallet("prop")
    advisor_id, _advisor = await user_with_wallet("propa")
    await make_advisor(db, advisor_id, RATE)
    reading = await start_reading(db, client_id, advisor_id, RATE)
    _admin_id, admin = await admin_client()
    return {"client_id": client_id, "client": client, "admin": admin, "reading": reading}


async def _step(ctx: dict[str, Any], m: Model, op: tuple) -> None:
    client, admin, reading = ctx["client"], ctx["admin"], ctx["reading"]
    kind = op[0]
    if kind == "deposit":
        _k, amount, token = op
        key, body = unique("pk"), deposit_body(amount, token)
        resp = await client.post("/v1/wallet/deposits", body, headers={"idempotency-key": key})
        expected = {"tok_approved": 201, "tok_declined": 402, "tok_held": 202}[token]
        assert resp.status == expected, resp.text
        dep = resp.json()["deposit"]
        m.deposits.append(
            {
                "key": key,
                "body": body,
                "status": dep["status"],
                "reply": resp.json(),
                "id": dep["id"],
                "amount": amount,
                "reversed": 0,
                "trans_id": dep["gateway_transaction_id"],
            }
        )
        if dep["status"] == "approved":
            m.balance += amount
    elif kind == "retry_deposit":
        if not m.deposits:
            return
        d = m.deposits[op[1] % len(m.deposits)]
        resp = await client.post("/v1/wallet/deposits", d["body"], headers={"idempotency-key": d["key"]})
        assert resp.json() == d["reply"] and resp.headers.get("idempotent-replayed") == "true"
    elif kind == "debit":
        for _ in range(op[1]):
            minute = m.minutes + 1
            try:
                await database().batch(charge_minute_statements(reading, minute))
            except TriggerAbort as exc:
                assert exc.code == "insufficient_funds" and m.balance < RATE
                return
            assert m.balance >= RATE, "a debit went through without funds"
            m.minutes, m.charged, m.balance = minute, m.charged + RATE, m.balance - RATE
    elif kind == "refund":
        amount = op[1]
        resp = await admin.post(
            f"/v1/admin/readings/{reading['id']}/refund",
            {"amount_cents": amount, "reason": "prop"},
            headers={"idempotency-key": unique("rk")},
        )
        if amount <= m.charged - m.refunded:
            assert resp.status == 201, resp.text
            m.refunded += amount
            m.balance += amount
        else:
            assert resp.status == 409 and resp.json()["code"] == "refund_exceeds_charges"
    elif kind == "reverse":
        if not m.deposits:
            return
        _k, index, how, amount = op
        d = m.deposits[index % len(m.deposits)]
        remaining = d["amount"] - d["reversed"]
        if how == "void":
            body = event("net.authorize.payment.void.created", trans_id=d["trans_id"] or "0", invoice=d["id"])
            amount = remaining
        else:
            body = event(
                "net.authorize.payment.refund.created", trans_id=str(unique("9")), invoice=d["id"], amount_cents=amount
            )
        outcome = (await post_event(body)).json()["outcome"]
        m.webhooks.append(body)
        if d["status"] == "approved" and 0 < amount <= remaining:
            assert outcome == "reversed"
            d["reversed"] += amount
            m.balance -= amount
            if d["reversed"] == d["amount"]:
                d["status"] = "voided" if how == "void" else "refunded"
        elif d["status"] == "pending" and how == "void":
            assert outcome == "voided_uncredited"
            d["status"] = "voided"
        else:
            assert outcome in ("not_reversible", "amount_invalid"), outcome
    elif kind == "resolve_held":
        held = [d for d in m.deposits if d["reply"]["deposit"]["status"] == "pending"]
        if not held:
            return
        d = held[op[1] % len(held)]
        event_type = "net.authorize.payment.fraud." + ("approved" if op[2] == "approve" else "declined")
        body = event(event_type, trans_id=d["trans_id"], invoice=d["id"], amount_cents=d["amount"])
        outcome = (await post_event(body)).json()["outcome"]
        m.webhooks.append(body)
        if d["status"] == "pending":
            assert outcome == ("credited" if op[2] == "approve" else "declined")
            d["status"] = "approved" if op[2] == "approve" else "declined"
            if op[2] == "approve":
                m.balance += d["amount"]
        else:
            assert outcome in ("already_credited", "unexpected_capture", "not_pending"), outcome
    elif kind == "replay_webhook":
        if not m.webhooks:
            return
        body = m.webhooks[op[1] % len(m.webhooks)]
        assert (await post_event(body)).json()["outcome"] == "duplicate"


async def _invariants(ctx: dict[str, Any], m: Model) -> None:
    assert await balance(ctx["client_id"]) == m.balance
    report = await reconcile.check(database())
    assert report["ok"], json.dumps([c for c in report["checks"] if not c["ok"]])


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(steps)
def test_random_interleavings_keep_every_invariant(ops):
    ctx = run_sync(_setup())
    m = Model()
    for op in ops:
        run_sync(_step(ctx, m, op))
        run_sync(_invariants(ctx, m))
