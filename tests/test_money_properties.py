"""Property test: random interleavings of deposits (approved, declined, held),
their retries, promo code redemptions, per-minute debits (promo credit first,
then the wallet), admin refunds (promo-paid cents back to promo credit), the
cron's promo expiry, gateway reversals and resolutions, and webhook replays,
against a simple model; after EVERY step the wallet and the promo balance equal
the model and every reconciliation invariant (promo ones included) holds.

Plain `def` test (Hypothesis drives it), each step run with run_sync on the
real runtime and real local D1."""

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyodide.ffi import run_sync

from clairvora import billing, promo, reconcile
from clairvora.db import sql
from market_support import now_ms
from money_support import (
    admin_client,
    balance,
    make_advisor,
    start_reading,
    user_with_wallet,
)
from promo_support import DAY_MS, create_code, promo_balance, redeem, sweep
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
grant = st.tuples(st.just("promo_code"), st.integers(1, 400), st.sampled_from([1, 30]))
expire = st.tuples(st.just("promo_expiry"))
steps = st.lists(
    st.one_of(deposit, retry, debit, refund, reverse, resolve, replay, grant, expire), min_size=2, max_size=8
)


class Model:
    def __init__(self) -> None:
        self.balance = 0
        self.promo: dict[int, list[int]] = {}  # grant id -> [expires_at_ms, remaining]
        self.charged_promo = 0
        self.refunded_promo = 0
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


def _promo_total(m: "Model") -> int:
    return sum(remaining for _expires, remaining in m.promo.values())


async def _promo_step(ctx: dict[str, Any], m: "Model", op: tuple) -> bool:
    """The promo steps; False when `op` is not one."""
    kind = op[0]
    if kind == "promo_code":
        _k, cents, days = op
        code = await create_code(ctx["admin"], credit_cents=cents, credit_valid_days=days, max_redemptions=1)
        resp = await redeem(ctx["client"], code["code"])
        assert resp.status == 201, resp.text
        row = await database().first(
            sql(
                "SELECT id, expires_at_ms FROM promo_grants WHERE redemption_id = ?",
                int(resp.json()["redemption"]["id"]),
            )
        )
        m.promo[int(row["id"])] = [int(row["expires_at_ms"]), cents]
        return True
    if kind == "promo_expiry":
        # two days on: every 1-day grant has expired and the sweep returns what is left of it
        cutoff = now_ms() + 2 * DAY_MS
        await sweep(cutoff)
        for grant_id, (expires, _remaining) in m.promo.items():
            if expires <= cutoff:
                m.promo[grant_id][1] = 0
        return True
    return False


async def _debit_one(ctx: dict[str, Any], m: "Model") -> bool:
    """One minute through the real planner and statements: promo first (FIFO by expiry), then the wallet."""
    reading = ctx["reading"]
    row = await database().first(sql(billing.SELECT_READING, reading["id"]))
    grants = promo.parse_grants(row["promo_grants_json"])
    begin = int(row["accepted_at_ms"]) + m.minutes * 60_000
    pays, _stop = promo.allocate(grants, int(row["wallet_cents"]), RATE, [begin])
    model_promo = min(RATE, _promo_total(m))
    if not pays:
        assert model_promo + max(0, m.balance) < RATE, "the planner refused a payable minute"
        return False
    assert pays[0].promo_cents == model_promo, (pays[0], m.promo)
    # charged at the reading's own start (as the wallet-only helper does): no presence rule in play
    await database().batch(billing.charge_statements(row, m.minutes + 1, 1, None, pays[0]))
    left = model_promo
    for grant_id in sorted(m.promo, key=lambda g: (m.promo[g][0], g)):  # FIFO by expiry, then id
        take = min(left, m.promo[grant_id][1])
        m.promo[grant_id][1] -= take
        left -= take
    m.minutes += 1
    m.charged += RATE
    m.charged_promo += model_promo
    m.balance -= RATE - model_promo
    return True


async def _step(ctx: dict[str, Any], m: Model, op: tuple) -> None:
    client, admin, reading = ctx["client"], ctx["admin"], ctx["reading"]
    kind = op[0]
    if await _promo_step(ctx, m, op):
        return
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
            if not await _debit_one(ctx, m):
                return
    elif kind == "refund":
        amount = op[1]
        resp = await admin.post(
            f"/v1/admin/readings/{reading['id']}/refund",
            {"amount_cents": amount, "reason": "prop"},
            headers={"idempotency-key": unique("rk")},
        )
        if amount <= m.charged - m.refunded:
            assert resp.status == 201, resp.text
            back = resp.json()["refund"]
            wallet_paid = (m.charged - m.charged_promo) - (m.refunded - m.refunded_promo)
            assert 0 <= back["promo_cents"] <= m.charged_promo - m.refunded_promo, back
            assert 0 <= back["wallet_cents"] <= wallet_paid and back["wallet_cents"] + back["promo_cents"] == amount
            m.refunded += amount
            m.refunded_promo += back["promo_cents"]
            m.balance += back["wallet_cents"]
            if back["promo_cents"]:
                row = await database().first(
                    sql(
                        "SELECT id, expires_at_ms FROM promo_grants WHERE transfer_id = (SELECT transfer_id FROM "
                        "reading_refunds WHERE id = ?)",
                        int(back["id"]),
                    )
                )
                m.promo[int(row["id"])] = [int(row["expires_at_ms"]), back["promo_cents"]]
            if m.refunded == m.charged:  # all of it back: each side exactly what it paid
                assert m.refunded_promo == m.charged_promo
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
    assert await promo_balance(ctx["client_id"]) == _promo_total(m)
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
