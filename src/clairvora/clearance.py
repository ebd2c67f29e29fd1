"""Earnings clearance (the cron): pending earnings older than EARNINGS_HOLD_DAYS
move to cleared earnings, where they can be paid out. Both balances stay one
account row each (O(1)); the ledger keeps which entries a clearance covered.

The unit is one advisor per run (an `earnings_clearances` row and its
`earnings_clearance` transfer), with a high-water mark: the pending account's
entries are looked at in sequence order from `cleared_through_sequence`, each
one once, up to the first that is younger than the hold (`through`, a
sequence). What may clear is computed from balances, not from the entries
looked at:

    clearable = min(pending balance now, balance after entry `through`
                    - what clearances made after `through` already moved)

i.e. everything earned (less what was refunded or clawed back) up to the last
aged entry, not yet cleared, and never more than pending holds now: a refund
or clawback that took pending earnings meanwhile (aged or not) is simply not
cleared, and pending can never go below zero (its CHECK). A clearance is one
batch planned on the pending account's last sequence; the row's trigger
refuses it if the account moved since, and UNIQUE (advisor_id,
pending_sequence) refuses a second run on the same state, so concurrent runs
clear exactly once. Which advisors a run looks at: those whose
`next_clearance_at_ms` is due, the first young entry's time plus the hold
(or one hold from now when none is young), so an idle advisor costs one
look per hold period.
"""

from typing import Any

from . import ledger, logs, payout_flow
from .config import Settings
from .db import Database, Statement, TriggerAbort, UniqueViolation, sql
from .ids import new_id

DAY_MS = 86_400_000
ADVISORS_PER_RUN = 10
ENTRIES_PER_LOOK = 500  # pending entries looked at per advisor per run (the rest next run)

_DUE = """
SELECT advisor_id FROM advisor_payout_state WHERE next_clearance_at_ms <= ?
ORDER BY next_clearance_at_ms LIMIT ?"""

# One advisor's plan: the first young entry after the mark (bounded scan), the
# last aged one (`through`), the balance after it and the clearances since it.
_PLAN = """
WITH a AS (SELECT id, balance_cents, last_sequence FROM accounts WHERE owner_user_id = ?1 AND kind = 'advisor_earnings'),
     s AS (SELECT cleared_through_sequence AS h FROM advisor_payout_state WHERE advisor_id = ?1),
     f AS (SELECT e.sequence AS seq, e.created_at_ms AS at_ms FROM ledger_entries e, a, s
           WHERE e.account_id = a.id AND e.sequence > s.h AND e.sequence <= s.h + ?2 AND e.created_at_ms > ?3
           ORDER BY e.sequence LIMIT 1),
     t AS (SELECT coalesce((SELECT seq FROM f) - 1, min(a.last_sequence, s.h + ?2)) AS through FROM a, s)
SELECT ?1 AS advisor_id, a.balance_cents, a.last_sequence, s.h, t.through,
       (SELECT at_ms FROM f) AS young_at_ms,
       coalesce((SELECT balance_after_cents FROM ledger_entries WHERE account_id = a.id AND sequence = t.through), 0)
         AS balance_through,
       (SELECT coalesce(sum(amount_cents), 0) FROM earnings_clearances
         WHERE advisor_id = ?1 AND pending_sequence >= t.through) AS cleared_since
FROM a, s, t"""


def clearable(plan: dict[str, Any]) -> int:
    return max(0, min(int(plan["balance_cents"]), int(plan["balance_through"]) - int(plan["cleared_since"])))


def next_look_ms(plan: dict[str, Any], now_ms: int, hold_ms: int) -> int:
    if plan["young_at_ms"] is not None:
        return max(int(plan["young_at_ms"]) + hold_ms, now_ms + 1)
    if int(plan["through"]) < int(plan["last_sequence"]):
        return now_ms  # more aged entries than one look takes: next run
    return now_ms + max(hold_ms, 60_000)


def _state_update(settings: Settings, plan: dict[str, Any], now_ms: int) -> Statement:
    """The mark and the next look; an automatic payout falls due once cleared
    earnings reach PAYOUT_AUTO_MIN_CENTS (at most once per interval since the last payout)."""
    advisor_id = int(plan["advisor_id"])
    return sql(
        """UPDATE advisor_payout_state
           SET cleared_through_sequence = max(cleared_through_sequence, ?),
               next_clearance_at_ms = ?,
               auto_payout_due_at_ms = CASE
                 WHEN (SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'advisor_cleared') >= ?
                 THEN coalesce(auto_payout_due_at_ms, max(?, coalesce(last_payout_at_ms, 0) + ?))
                 ELSE auto_payout_due_at_ms END,
               updated_at_ms = ?
           WHERE advisor_id = ?""",
        int(plan["through"]),
        next_look_ms(plan, now_ms, settings.earnings_hold_days * DAY_MS),
        advisor_id,
        settings.payout_auto_min_cents,
        now_ms,
        settings.payout_auto_interval_days * DAY_MS,
        now_ms,
        advisor_id,
    )


def clearance_statements(
    settings: Settings, plan: dict[str, Any], amount: int, cutoff_ms: int, now_ms: int
) -> list[Statement]:
    """The clearance row (its trigger: the account is as planned), its transfer, the mark."""
    advisor_id, pending_sequence = int(plan["advisor_id"]), int(plan["last_sequence"])
    clearance_id, transfer_id = new_id(), new_id()
    return [
        sql(
            """INSERT INTO earnings_clearances (id, advisor_id, transfer_id, amount_cents, through_sequence,
                                                pending_sequence, cutoff_ms, created_at_ms)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            clearance_id,
            advisor_id,
            transfer_id,
            amount,
            int(plan["through"]),
            pending_sequence,
            cutoff_ms,
            now_ms,
        ),
        *ledger.transfer(
            transfer_id=transfer_id,
            key=f"earnings_clearance:{advisor_id}:{pending_sequence}",
            kind="earnings_clearance",
            legs=[
                ledger.Leg(ledger.earnings_of(advisor_id), -amount),
                ledger.Leg(payout_flow.cleared_of(advisor_id), amount),
            ],
            now_ms=now_ms,
            reference_type="earnings_clearance",
            reference_id=clearance_id,
        ),
        _state_update(settings, plan, now_ms),
    ]


async def clear_advisor(db: Database, settings: Settings, plan: dict[str, Any], now_ms: int) -> int:
    """One advisor's clearance (cents moved, 0 for none or a plan gone stale)."""
    cutoff_ms = now_ms - settings.earnings_hold_days * DAY_MS
    amount = clearable(plan)
    if amount == 0:
        await db.run(_state_update(settings, plan, now_ms))
        return 0
    try:
        await db.batch(clearance_statements(settings, plan, amount, cutoff_ms, now_ms))
    except (TriggerAbort, UniqueViolation) as exc:
        stale = isinstance(exc, TriggerAbort) and exc.code == "clearance_stale"
        if not (stale or isinstance(exc, UniqueViolation)):
            raise
        # The account moved since the plan (a charge, a refund, another run): the next run plans again.
        logs.info("clearance_skipped", advisor_id=int(plan["advisor_id"]))
        return 0
    return amount


async def plans(db: Database, settings: Settings, advisor_ids: list[int], now_ms: int) -> list[dict[str, Any]]:
    """Every advisor's plan in one round trip."""
    if not advisor_ids:
        return []
    cutoff_ms = now_ms - settings.earnings_hold_days * DAY_MS
    results = await db.batch([sql(_PLAN, a, ENTRIES_PER_LOOK, cutoff_ms) for a in advisor_ids])
    return [r.rows[0] for r in results if r.rows]


async def clear_advisors(
    db: Database, settings: Settings, advisor_ids: list[int], now_ms: int, call_budget: int
) -> dict[str, int]:
    """Plan the advisors in one round trip, then one batch each while D1 calls remain."""
    cleared = cents = 0
    for plan in await plans(db, settings, advisor_ids, now_ms):
        if db.counters.calls >= call_budget:
            break
        moved = await clear_advisor(db, settings, plan, now_ms)
        cleared += moved > 0
        cents += moved
    return {"clearances": cleared, "cleared_cents": cents}


async def clear_earnings(db: Database, settings: Settings, now_ms: int, call_budget: int) -> dict[str, int]:
    """The cron job: up to ADVISORS_PER_RUN advisors whose look is due."""
    if db.counters.calls + 3 > call_budget:
        return {"clearances": 0, "cleared_cents": 0}
    due = await db.all(sql(_DUE, now_ms, ADVISORS_PER_RUN))
    return await clear_advisors(db, settings, [int(r["advisor_id"]) for r in due.rows], now_ms, call_budget)
