"""Property test for card money going back: random sequences of card deposits
(settled or not yet), per-minute charges, refunds of unused funds (the gateway
refunding, refusing, failing once, losing its answer, never answering),
chargebacks (platform or clawback side), their resolution (won, lost) and the
cron's resolver, against a model; after EVERY step the wallet and the
advisor's pending earnings equal the model, no deposit has given back more
than it took, and every ledger invariant holds (reconcile.check).

Kept apart from test_money_properties.py (promotional credit joins that one);
plain `def` test, each step run with run_sync on the real runtime and D1."""

import json
import time
from typing import Any

import local_runtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyodide.ffi import run_sync

from card_support import SETTLED_AGO_S, deposit_body, plan
from clairvora import ledger, reconcile, refund_resolution
from clairvora.config import Settings
from clairvora.db import TriggerAbort, sql
from money_support import admin_client, balance, charge_minute_statements, make_advisor, start_reading, user_with_wallet
from support import database, unique
from test_chargebacks import post_with_vars
from world import Actor

RATE = 170
ADVISOR_PART = 119  # RATE at 30 % platform fee

deposit = st.tuples(st.just("deposit"), st.integers(500, 2500), st.booleans())
settle = st.tuples(st.just("settle"), st.integers(0, 7))
debit = st.tuples(st.just("debit"), st.integers(1, 4))
refund = st.tuples(
    st.just("refund"),
    st.one_of(st.none(), st.integers(1, 3000)),
    st.sampled_from(["ok", "ok", "refuse", "fail", "lost", "timeout"]),
)
chargeback = st.tuples(
    st.just("chargeback"), st.integers(0, 7), st.sampled_from(["platform", "clawback"]), st.integers(1, 2500)
)
resolve = st.tuples(st.just("resolve"), st.integers(0, 7), st.sampled_from(["won", "lost"]))
cron = st.tuples(st.just("cron"))
steps = st.lists(st.one_of(deposit, settle, debit, refund, chargeback, resolve, cron), min_size=2, max_size=8)


class Model:
    def __init__(self) -> None:
        self.wallet = 0
        self.pending = 0  # the advisor's pending earnings
        self.minutes = 0
        self.deposits: list[dict[str, Any]] = []  # id, trans_id, amount, left, settled, minutes_before
        self.parts: list[dict[str, Any]] = []  # in transit: id, deposit, amount, behaviour
        self.chargebacks: list[dict[str, Any]] = []  # id, deposit, amount, clawback, open

    def on_hold(self) -> bool:
        return any(c["open"] for c in self.chargebacks)


async def _setup() -> dict[str, Any]:
    db = database()
    client_id, client = await user_with_wallet("cprop")
    advisor_id, _advisor = await user_with_wallet("cpropa")
    await make_advisor(db, advisor_id, RATE)
    reading = await start_reading(db, client_id, advisor_id, RATE, now_ms=int(time.time() * 1000))
    admin_id, admin = await admin_client()
    admin_actor = Actor("", admin_id, str(admin.token), admin)
    return {
        "client_id": client_id,
        "advisor_id": advisor_id,
        "client": client,
        "admin": admin_actor,
        "reading": reading,
    }


def _plan(m: Model, target: int) -> list[tuple[dict[str, Any], int]]:
    """The deposits a refund draws on: newest first, settled only, at most what is left of each."""
    out, planned = [], 0
    for d in reversed(m.deposits):
        if planned >= target or len(out) >= 5:
            break
        if d["settled"] and d["left"] > 0:
            take = min(d["left"], target - planned)
            out.append((d, take))
            planned += take
    return out


def _expected_refusal(m: Model, wanted: int | None, planned: int) -> str | None:
    if m.on_hold():
        return "chargeback_hold"
    if m.wallet <= 0:
        return "nothing_to_refund"
    if wanted is not None and wanted > m.wallet:
        return "refund_exceeds_balance"
    if planned == 0 or (wanted is not None and planned < wanted):
        return "refund_not_available"
    return None


async def _refund(ctx: dict[str, Any], m: Model, wanted: int | None, behaviour: str) -> None:
    parts = _plan(m, wanted if wanted is not None else max(m.wallet, 0))
    planned = sum(take for _d, take in parts)
    refusal = _expected_refusal(m, wanted, planned)
    if refusal is None and behaviour != "ok":
        plan(parts[0][0]["trans_id"], behaviour)  # what the first part meets at the gateway
    resp = await ctx["client"].post(
        "/v1/wallet/refunds",
        {} if wanted is None else {"amount_cents": wanted},
        headers={"idempotency-key": unique("prk")},
    )
    if refusal is not None:
        assert resp.status in (403, 409) and resp.json()["code"] == refusal, (refusal, resp.text)
        return
    view = resp.json()["refund"]
    assert [(p["deposit_id"], p["amount_cents"]) for p in view["parts"]] == [(d["id"], t) for d, t in parts]
    fates = {"ok": "settled", "refuse": "returned", "fail": "returned", "lost": "in_transit", "timeout": "in_transit"}
    for i, (p, (d, take)) in enumerate(zip(view["parts"], parts, strict=True)):
        fate = behaviour if i == 0 else "ok"
        assert p["status"] == fates[fate], (fate, view)
        if fates[fate] != "returned":
            d["left"] -= take
            m.wallet -= take
        if fates[fate] == "in_transit":
            m.parts.append({"id": p["id"], "deposit": d, "amount": take, "behaviour": fate})
    statuses = {p["status"] for p in view["parts"]}
    expected_status = 202 if "in_transit" in statuses else (502 if statuses == {"returned"} else 201)
    assert resp.status == expected_status, resp.text


async def _chargeback(ctx: dict[str, Any], m: Model, index: int, side: str, amount: int) -> None:
    if not m.deposits:
        return
    d = m.deposits[index % len(m.deposits)]
    resp = await post_with_vars(
        ctx["admin"],
        f"/v1/admin/payments/{d['id']}/chargebacks",
        {"note": "prop", "amount_cents": amount},
        CHARGEBACK_ADVISOR_SIDE=side,
    )
    if d["left"] <= 0:
        assert resp.status == 409 and resp.json()["code"] == "chargeback_not_possible", resp.text
        return
    if amount > d["left"]:
        assert resp.status == 409 and resp.json()["code"] == "chargeback_exceeds_deposit", resp.text
        return
    assert resp.status == 201, resp.text
    clawed = 0
    spent = amount - max(0, m.wallet)
    paid = (m.minutes - d["minutes_before"]) * RATE
    if side == "clawback" and spent > 0 and paid > 0:
        share = (m.minutes - d["minutes_before"]) * ADVISOR_PART
        clawed = min(share * min(spent, paid) // paid, m.pending)
    assert resp.json()["chargeback"]["clawback_cents"] == clawed, (resp.text, spent, paid, m.pending)
    m.wallet += clawed - amount
    m.pending -= clawed
    d["left"] -= amount
    m.chargebacks.append(
        {"id": resp.json()["chargeback"]["id"], "deposit": d, "amount": amount, "clawback": clawed, "open": True}
    )


async def _step(ctx: dict[str, Any], m: Model, op: tuple) -> None:
    kind = op[0]
    if kind == "deposit":
        _k, amount, settled = op
        resp = await ctx["client"].post(
            "/v1/wallet/deposits", deposit_body(amount), headers={"idempotency-key": unique("pdk")}
        )
        if m.on_hold():
            assert resp.status == 403 and resp.json()["code"] == "chargeback_hold", resp.text
            return
        assert resp.status == 201, resp.text
        dep = resp.json()["deposit"]
        d = {
            "id": dep["id"],
            "trans_id": dep["gateway_transaction_id"],
            "amount": amount,
            "left": amount,
            "settled": False,
            "minutes_before": m.minutes,
        }
        m.deposits.append(d)
        m.wallet += amount
        if settled:
            local_runtime.anetControl.ageTransaction(d["trans_id"], SETTLED_AGO_S)
            d["settled"] = True
    elif kind == "settle":
        unsettled = [d for d in m.deposits if not d["settled"]]
        if unsettled:
            d = unsettled[op[1] % len(unsettled)]
            local_runtime.anetControl.ageTransaction(d["trans_id"], SETTLED_AGO_S)
            d["settled"] = True
    elif kind == "debit":
        for _ in range(op[1]):
            minute = m.minutes + 1
            try:
                await database().batch(charge_minute_statements(ctx["reading"], minute, int(time.time() * 1000)))
            except TriggerAbort as exc:
                assert exc.code == "insufficient_funds" and m.wallet < RATE
                return
            assert m.wallet >= RATE, "a charge went through without funds"
            m.minutes, m.wallet, m.pending = minute, m.wallet - RATE, m.pending + ADVISOR_PART
    elif kind == "refund":
        await _refund(ctx, m, op[1], op[2])
    elif kind == "chargeback":
        await _chargeback(ctx, m, op[1], op[2], op[3])
    elif kind == "resolve":
        if not m.chargebacks:
            return
        c = m.chargebacks[op[1] % len(m.chargebacks)]
        resp = await post_with_vars(
            ctx["admin"], f"/v1/admin/chargebacks/{c['id']}/resolve", {"outcome": op[2], "note": "prop"}
        )
        if not c["open"]:
            assert resp.status == 409 and resp.json()["code"] == "chargeback_not_open", resp.text
            return
        assert resp.status == 200, resp.text
        c["open"] = False
        if op[2] == "won":
            m.wallet += c["amount"] - c["clawback"]
            m.pending += c["clawback"]
            c["deposit"]["left"] += c["amount"]
    elif kind == "cron":
        later = int(time.time() * 1000) + refund_resolution.RESOLVE_AFTER_MS + 60_000
        settings_ = Settings.from_env(local_runtime.makeEnv())
        for _ in range(30):
            counts = await refund_resolution.resolve_refunds_in_transit(database(), settings_, later)
            if counts.get("refunds_looked_up", 0) == 0:
                break
        for p in m.parts:
            if p["behaviour"] == "timeout":  # never made: the money comes back
                m.wallet += p["amount"]
                p["deposit"]["left"] += p["amount"]
        m.parts = []


async def _invariants(ctx: dict[str, Any], m: Model) -> None:
    assert await balance(ctx["client_id"]) == m.wallet
    assert await ledger.balance_cents(database(), ledger.earnings_of(ctx["advisor_id"])) == m.pending
    for d in m.deposits:
        row = await database().first(
            sql(
                """SELECT amount_cents - reversed_cents - refunded_cents - charged_back_cents AS left_cents
                   FROM payments WHERE id = ?""",
                int(d["id"]),
            )
        )
        assert row is not None and row["left_cents"] == d["left"] >= 0
    report = await reconcile.check(database())
    assert report["ok"], json.dumps([c for c in report["checks"] if not c["ok"]])


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(steps)
def test_random_card_money_sequences_keep_every_invariant(ops):
    ctx = run_sync(_setup())
    m = Model()
    for op in ops:
        run_sync(_step(ctx, m, op))
        run_sync(_invariants(ctx, m))
