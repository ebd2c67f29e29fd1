"""GET /v1/admin/ledger/check and the reconciliation checks themselves."""

from clairvora import ledger, reconcile
from clairvora.clock import Clock
from clairvora.db import sql
from money_support import admin_client, credit, user_with_wallet
from support import Client, database, new_user, token_for, unique
from test_deposits import deposit_body


async def test_admin_gets_every_check_and_they_hold():
    _admin_id, admin = await admin_client()
    resp = await admin.get("/v1/admin/ledger/check")
    assert resp.status == 200, resp.text
    report = resp.json()
    names = {c["name"] for c in report["checks"]}
    assert {
        "transfers_balanced_and_posted",
        "balances_equal_sum_of_entries",
        "balances_equal_last_balance_after",
        "sequences_gap_free",
        "wallets_negative_only_by_reversal",
        "approved_payments_credited_once",
        "money_conserved",
    } <= names
    assert report["ok"] is True and all(c["ok"] for c in report["checks"])
    assert "calls=2" in resp.headers["server-timing"]  # caller + one batch of every check


async def test_non_admins_are_refused():
    _uid, client = await user_with_wallet("rc")
    assert (await client.get("/v1/admin/ledger/check")).status == 403
    assert (await Client().get("/v1/admin/ledger/check")).status == 401


async def _failing(name: str) -> list[str]:
    report = await reconcile.check(database())
    return [c["name"] for c in report["checks"] if not c["ok"] and c["name"] == name]


async def test_a_tampered_balance_is_reported():
    db = database()
    user_id, _client = await user_with_wallet("rc")
    await credit(db, user_id, 500)
    account = await db.first(sql("SELECT id FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet'", user_id))
    # accounts is not append-only (the triggers move it); tamper, look, restore.
    await db.run(sql("UPDATE accounts SET balance_cents = balance_cents + 1 WHERE id = ?", account["id"]))
    try:
        report = await reconcile.check(db)
        failed = {c["name"]: c["detail"] for c in report["checks"] if not c["ok"]}
        assert report["ok"] is False
        assert (
            "balances_equal_sum_of_entries" in failed and str(account["id"]) in failed["balances_equal_sum_of_entries"]
        )
        assert "balances_equal_last_balance_after" in failed and "money_conserved" in failed
    finally:
        await db.run(sql("UPDATE accounts SET balance_cents = balance_cents - 1 WHERE id = ?", account["id"]))
    assert (await reconcile.check(db))["ok"] is True


async def test_an_approved_payment_without_credit_is_reported():
    db = database()
    _uid, client = await user_with_wallet("rc")
    resp = await client.post(
        "/v1/wallet/deposits", deposit_body(600, "tok_declined"), headers={"idempotency-key": unique()}
    )
    payment_id = int(resp.json()["deposit"]["id"])
    await db.run(sql("UPDATE payments SET status = 'approved' WHERE id = ?", payment_id))
    try:
        assert await _failing("approved_payments_credited_once") == ["approved_payments_credited_once"]
    finally:
        await db.run(sql("UPDATE payments SET status = 'declined' WHERE id = ?", payment_id))
    assert await _failing("approved_payments_credited_once") == []
    assert await ledger.balance_cents(db, ledger.GATEWAY_CLEARING) is not None


async def test_payments_awaiting_the_gateway_are_listed_and_leave_the_list_when_resolved():
    from clairvora.ids import new_id
    from webhook_support import event, post_event

    _admin_id, admin = await admin_client()

    async def unresolved() -> dict:
        report = (await admin.get("/v1/admin/ledger/check")).json()
        assert report["ok"] is True
        return report["unresolved_payments"]

    before = await unresolved()
    _user_id, client = await user_with_wallet("rc")
    resp = await client.post(
        "/v1/wallet/deposits", deposit_body(1200, "tok_timeout"), headers={"idempotency-key": unique()}
    )
    assert resp.status == 504, resp.text
    payment_id = resp.json()["deposit"]["id"]
    during = await unresolved()
    assert during["count"] == before["count"] + 1
    assert during["oldest_created_at"] is not None and len(during["sample_ids"]) == min(during["count"], 5)
    capture = event(
        "net.authorize.payment.authcapture.created", trans_id=str(new_id()), invoice=payment_id, amount_cents=1200
    )
    assert (await post_event(capture)).json()["outcome"] == "credited"
    after = await unresolved()
    assert after["count"] == before["count"] and payment_id not in after["sample_ids"]


async def test_the_admin_report_shows_each_waiting_state_and_what_is_overdue_for_the_lookup():
    # Issue 13 item 6: a claim whose request died (here before the gateway call was
    # sent) is listed by state, and as overdue once the lookup's grace period is over.
    from clairvora.deposit_resolution import RESOLVE_AFTER_MS

    admin_sub, admin = await new_user("admin")
    admin_id = int((await admin.get("/v1/me")).json()["id"])
    await database().run(sql("UPDATE users SET is_admin = 1 WHERE id = ?", admin_id))

    async def unresolved(now_ms: int) -> dict:
        at_now = Client(await token_for(admin_sub, now_s=now_ms // 1000))
        resp = await at_now.get("/v1/admin/ledger/check", headers={"x-test-now-ms": str(now_ms)})
        assert resp.status == 200, resp.text
        return resp.json()["unresolved_payments"]

    user_id, client = await user_with_wallet("rc")
    now = Clock().now_ms()
    later = now + RESOLVE_AFTER_MS + 60_000
    before_now, before_later = await unresolved(now), await unresolved(later)
    died = await client.post(
        "/v1/wallet/deposits",
        deposit_body(1300, f"tok_approved.{unique()}"),
        headers={"idempotency-key": unique(), "x-test-d1-fault": "1;after"},
    )
    assert died.status == 503
    fresh, overdue = await unresolved(now), await unresolved(later)
    for report, before in ((fresh, before_now), (overdue, before_later)):
        assert report["by_state"]["claimed_not_settled"] == before["by_state"]["claimed_not_settled"] + 1
        assert report["by_state"]["unknown"] == before["by_state"]["unknown"]
        assert report["by_state"]["held_for_review"] == before["by_state"]["held_for_review"]
        assert report["count"] == before["count"] + 1
    assert fresh["lookup_overdue"]["count"] == before_now["lookup_overdue"]["count"]  # within the grace period
    assert overdue["lookup_overdue"]["count"] == before_later["lookup_overdue"]["count"] + 1
    assert len(overdue["lookup_overdue"]["sample_ids"]) == min(overdue["lookup_overdue"]["count"], 5)
    payment = await database().first(sql("SELECT id FROM payments WHERE user_id = ?", user_id))
    # Resolved (here by hand, as an operator would), it leaves every list.
    await database().run(sql("UPDATE payments SET status = 'error' WHERE id = ?", payment["id"]))
    assert (await unresolved(later))["by_state"] == before_later["by_state"]
