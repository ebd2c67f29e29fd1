"""The cron's payout jobs (cron.py runs them every minute, bounded, each unit
of work stopping short of the run's D1 call budget):

- `resume_payouts`: payouts still open whose next attempt is due. A
  `requested` one (its create timed out, answered 5xx or 429, or its request
  died) is sent again with the SAME sender_batch_id: PayPal answers 201 if it
  never got it, or refuses the duplicate and names the original batch, which
  is then looked up. A `sent` or `unclaimed` one whose webhook has not come is
  looked up (GET /v1/payments/payouts/{batch}) and its item's status applied
  exactly as a webhook's would be.
- `auto_payouts`: advisors whose automatic payout is due (clearance.py arms it
  once cleared earnings reach PAYOUT_AUTO_MIN_CENTS, at most once per
  PAYOUT_AUTO_INTERVAL_DAYS since the last payout): the whole cleared balance
  is paid out like a request, origin `schedule`.
"""

from typing import Any

from . import clearance, logs, payout_flow, payout_send, paypal
from .config import Settings
from .db import Database, sql
from .ids import new_id

CALL_BUDGET = 38  # of the run's 50 D1 calls; deposit resolution runs after these jobs
PAYOUTS_PER_RUN = 5
AUTO_PAYOUTS_PER_RUN = 3
LOOKUP_MISSING_RETRY_MS = clearance.DAY_MS

_DUE_PAYOUTS = f"""
SELECT {payout_flow.PAYOUT_COLUMNS} FROM payouts
WHERE status IN ('requested', 'sent', 'unclaimed') AND next_attempt_at_ms <= ?
ORDER BY next_attempt_at_ms LIMIT ?"""  # noqa: S608 - constant columns

_AUTO_ROW = """
SELECT s.advisor_id, m.recipient_type, m.receiver_masked, m.key_version, m.iv_b64, m.ciphertext_b64,
       (SELECT balance_cents FROM accounts WHERE owner_user_id = s.advisor_id AND kind = 'advisor_cleared')
         AS cleared_cents
FROM advisor_payout_state s LEFT JOIN payout_methods m ON m.user_id = s.advisor_id"""
_DUE_AUTO = (
    _AUTO_ROW
    + """
WHERE s.auto_payout_due_at_ms <= ?
ORDER BY s.auto_payout_due_at_ms LIMIT ?"""
)
_ONE_AUTO = _AUTO_ROW + " WHERE s.advisor_id = ? AND s.auto_payout_due_at_ms <= ?"

_NOT_DUE = "UPDATE advisor_payout_state SET auto_payout_due_at_ms = NULL, updated_at_ms = ? WHERE advisor_id = ?"


async def _look_up(db: Database, settings: Settings, payout: dict[str, Any], now_ms: int) -> str:
    pid = int(payout["id"])
    batch_id = payout["paypal_batch_id"]
    later = payout_flow.update_statement(pid, now_ms, next_attempt_at_ms=now_ms + LOOKUP_MISSING_RETRY_MS)
    if not batch_id:
        logs.error("payout_open_without_batch", payout_id=pid)
        await db.run(later)
        return "no_batch"
    try:
        batch = await paypal.get_batch(settings, batch_id)
    except paypal.PayPalUnavailable:
        retry = payout_send.retry_delay_ms(int(payout["attempts"]))
        await db.run(payout_flow.update_statement(pid, now_ms, next_attempt_at_ms=now_ms + retry, attempted=True))
        return "unavailable"
    if batch is None or batch.item is None or batch.item.sender_item_id != str(pid):
        logs.error("payout_batch_unknown", payout_id=pid)
        await db.run(later)
        return "unknown_batch"
    outcome = payout_flow.outcome_of_status(batch.item.transaction_status)
    statements, move = payout_flow.item_statements(payout, batch.item, outcome, now_ms, batch.batch_id)
    await payout_send.settle(db, statements, pid, [])
    return move.status or "pending"


async def resume_payout(db: Database, settings: Settings, payout: dict[str, Any], now_ms: int) -> None:
    """One open payout: sent again (requested) or looked up (sent, unclaimed)."""
    if payout["status"] == "requested":
        sent = await payout_send.send(settings, payout, now_ms)
        await payout_send.settle(db, sent.statements, int(payout["id"]), [])
    else:
        await _look_up(db, settings, payout, now_ms)


async def resume_payouts(
    db: Database, settings: Settings, now_ms: int, call_budget: int = CALL_BUDGET
) -> dict[str, int]:
    if db.counters.calls + 2 > call_budget:
        return {"payouts_resumed": 0}
    due = await db.all(sql(_DUE_PAYOUTS, now_ms, PAYOUTS_PER_RUN))
    resumed = 0
    for payout in due.rows:
        if db.counters.calls + 2 > call_budget:
            break
        await resume_payout(db, settings, payout, now_ms)
        resumed += 1
    return {"payouts_resumed": resumed}


async def _auto_payout(db: Database, settings: Settings, row: dict[str, Any], now_ms: int) -> bool:
    advisor_id = int(row["advisor_id"])
    cleared = int(row["cleared_cents"] or 0)
    if cleared < settings.payout_auto_min_cents or cleared < settings.payout_min_cents or row["ciphertext_b64"] is None:
        # Below the threshold (a manual payout took it), or nowhere to send it: the next
        # clearance run arms it again once both hold.
        await db.run(sql(_NOT_DUE, now_ms, advisor_id))
        return False
    # The whole cleared balance as the claim finds it, if still at the thresholds
    # (a payout on request may have taken it since it was read).
    claimed, *_rest = await db.batch(
        payout_flow.claim_statements(
            payout_id=new_id(),
            origin="schedule",
            amount_cents=None,
            min_cents=max(settings.payout_auto_min_cents, settings.payout_min_cents),
            now_ms=now_ms,
            advisor_id=advisor_id,
        )
    )
    if not claimed.rows:
        logs.info("auto_payout_skipped", advisor_id=advisor_id)
        await db.run(sql(_NOT_DUE, now_ms, advisor_id))
        return False
    payout = claimed.rows[0]
    sent = await payout_send.send(settings, payout, now_ms)
    await payout_send.settle(db, sent.statements, int(payout["id"]), [])
    return True


async def auto_payout_for(db: Database, settings: Settings, advisor_id: int, now_ms: int) -> bool | None:
    """One advisor's automatic payout if it is due (None: not due)."""
    row = await db.first(sql(_ONE_AUTO, advisor_id, now_ms))
    return None if row is None else await _auto_payout(db, settings, row, now_ms)


async def auto_payouts(db: Database, settings: Settings, now_ms: int, call_budget: int = CALL_BUDGET) -> dict[str, int]:
    if db.counters.calls + 3 > call_budget or not (settings.paypal_endpoint and settings.payout_keys):
        return {"auto_payouts": 0}
    due = await db.all(sql(_DUE_AUTO, now_ms, AUTO_PAYOUTS_PER_RUN))
    made = 0
    for row in due.rows:
        if db.counters.calls + 3 > call_budget:
            break
        made += await _auto_payout(db, settings, row, now_ms)
    return {"auto_payouts": made}
