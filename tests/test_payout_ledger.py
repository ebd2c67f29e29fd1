"""Migration 0093's rules, in SQL, and the ledger check's payout invariants:
a payout's status never moves without its money nor its money without its
status, transfers name their payout or clearance, and GET
/v1/admin/ledger/check reports a payout whose books do not add up."""

import pytest

from clairvora import ledger, payout_flow, reconcile
from clairvora.db import Statement, TriggerAbort, sql
from clairvora.ids import new_id
from payout_support import cleared_advisor, now_ms, payout_row, request_payout
from support import database

PAYOUT_CHECKS = {
    "payouts_in_transit_match_open_payouts",
    "payout_clearing_matches_paid_payouts",
    "payout_transfers_match_status",
    "clearances_match_transfers",
    "advisor_earnings_never_negative",
}


async def _failing() -> dict[str, str]:
    report = await reconcile.check(database())
    return {c["name"]: c["detail"] for c in report["checks"] if not c["ok"]}


async def test_a_status_never_moves_without_its_money():
    a, _earned, _email = await cleared_advisor(15)
    pid = int((await request_payout(a)).json()["id"])
    db = database()
    with pytest.raises(TriggerAbort) as refused:
        await db.run(sql("UPDATE payouts SET status = 'succeeded' WHERE id = ?", pid))
    assert refused.value.code == "payout_settlement_missing"
    with pytest.raises(TriggerAbort) as refused:
        await db.run(sql("UPDATE payouts SET status = 'failed' WHERE id = ?", pid))
    assert refused.value.code == "payout_return_missing"
    with pytest.raises(TriggerAbort) as refused:
        await db.run(sql("UPDATE payouts SET status = 'requested' WHERE id = ?", pid))
    assert refused.value.code == "payout_transition_invalid"
    with pytest.raises(TriggerAbort) as refused:
        await db.run(sql("UPDATE payouts SET amount_cents = amount_cents + 1 WHERE id = ?", pid))
    assert refused.value.code == "payout_terms_fixed"
    with pytest.raises(TriggerAbort) as refused:
        await db.run(sql("DELETE FROM payouts WHERE id = ?", pid))
    assert refused.value.code == "ledger_append_only"
    # A second payout transfer for it, or one under another key, is refused.
    row = await payout_row(pid)
    statements = payout_flow.move_statements(row, payout_flow.Move("succeeded", "settle"), now_ms())
    with pytest.raises(TriggerAbort) as refused:
        forged = Statement(statements[0].sql, (new_id(), "payout:x", *statements[0].params[2:]))
        await db.batch([forged, *statements[1:]])
    assert refused.value.code == "payout_reference_invalid"


async def test_the_ledger_check_reports_payout_books_that_do_not_add_up():
    a, earned, _email = await cleared_advisor(15)
    assert not PAYOUT_CHECKS & set(await _failing())
    db = database()
    # A payout row whose money never moved (its claim batch is what keeps them together).
    claim = payout_flow.claim_statements(
        payout_id=new_id(), origin="request", amount_cents=earned, min_cents=1, now_ms=now_ms(), advisor_id=a.id
    )
    (payout,) = (await db.all(claim[0])).rows
    failing = await _failing()
    assert {"payouts_in_transit_match_open_payouts", "payout_transfers_match_status"} <= set(failing)
    assert str(payout["id"]) in failing["payout_transfers_match_status"]
    # Its money moves: the books add up again.
    await db.batch(claim[1:])
    assert not PAYOUT_CHECKS & set(await _failing())
    # A settlement without its status change (the status trigger only guards status changes).
    move = payout_flow.Move(None, "settle")
    await db.batch(payout_flow.move_statements({**payout, "status": "requested"}, move, now_ms()))
    failing = await _failing()
    assert {
        "payouts_in_transit_match_open_payouts",
        "payout_clearing_matches_paid_payouts",
        "payout_transfers_match_status",
    } <= set(failing)
    await db.run(payout_flow.update_statement(payout["id"], now_ms(), status="succeeded"))
    assert not PAYOUT_CHECKS & set(await _failing())


async def test_a_clearance_transfer_needs_its_clearance_row():
    a, _earned, _email = await cleared_advisor(15)
    transfer_id = new_id()
    statements = ledger.transfer(
        transfer_id=transfer_id,
        key=f"earnings_clearance:forged:{transfer_id}",
        kind="earnings_clearance",
        legs=[ledger.Leg(payout_flow.cleared_of(a.id), -100), ledger.Leg(ledger.earnings_of(a.id), 100)],
        now_ms=now_ms(),
        reference_type="earnings_clearance",
        reference_id=new_id(),
    )
    with pytest.raises(TriggerAbort) as refused:
        await database().batch(statements)
    assert refused.value.code == "clearance_reference_invalid"
