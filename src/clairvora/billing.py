"""Per-minute billing of an active reading, race-free on D1.

Minute k of a reading begins at accepted_at + (k-1) * period and is charged
when it begins: one balanced ledger transfer (key `reading:<id>:minute:<k>`:
the client's wallet pays the rate, split between the advisor's earnings and
platform revenue) plus a `reading_charges` row. Everything one call charges
goes into ONE batch (one transaction, one D1 round trip).

Nothing here trusts what Python read. The SQL refuses, and rolls the batch
back, whenever the read was stale (migrations 0002 and 0020):
  - a transfer key or (reading, minute) charged before -> UNIQUE;
  - a minute out of order, or an inactive reading     -> reading_not_billable;
  - a wallet that cannot pay                          -> insufficient_funds;
and the status changes at the end of a batch are conditional UPDATEs on
status, billed_minutes (and the last heartbeat, for a timeout). A refused
batch is re-planned from a fresh read, a bounded number of times. So
heartbeats from both participants, `end`, retries and the cron can all race
and every minute is charged at most once.

`plan()` is pure: given the reading, the wallet balance, the time and what is
asked, it says which minutes to charge and whether and how the reading ends.
"""

from dataclasses import dataclass
from typing import Any, Literal

from . import ledger
from .db import Database, Statement, TriggerAbort, UniqueViolation, sql
from .errors import service_unavailable
from .ids import new_id

Action = Literal["heartbeat", "client_ended", "advisor_ended", "timeout"]

# 6 statements per minute (transfer, 3 entries, post, charge row) + 2 more:
# 15 minutes = 92 statements, inside our 100-statement batch cap.
MAX_MINUTES_PER_BATCH = 15
# A call charges at most this many batches' worth (the rest on the next call).
MAX_BATCHES_PER_CALL = 4
# Re-plans after a batch the SQL refused because someone else moved first.
MAX_ATTEMPTS = 5
LOW_BALANCE_MINUTES = 2

READING_COLUMNS = """
  r.id, r.client_id, r.advisor_id, r.channel, r.status, r.rate_cents_per_minute, r.advisor_cents_per_minute,
  r.platform_cents_per_minute, r.billing_period_seconds, r.billed_minutes, r.end_reason, r.requested_at_ms,
  r.accepted_at_ms, r.ended_at_ms, r.last_heartbeat_at_ms, r.version,
  (SELECT balance_cents FROM accounts WHERE owner_user_id = r.client_id AND kind = 'client_wallet') AS wallet_cents"""

SELECT_READING = f"SELECT {READING_COLUMNS} FROM readings r WHERE r.id = ?"  # noqa: S608 - constant text


@dataclass(frozen=True, slots=True)
class Plan:
    first_minute: int  # the first minute to charge (billed_minutes + 1)
    minutes: int  # how many to charge in this batch
    end_reason: str | None  # the reading ends in this batch, for this reason
    ended_at_ms: int | None
    # Conditions of the end (each also re-checked in SQL):
    when_short_of_funds: bool  # ... only if the wallet cannot pay the next minute
    when_heartbeat_at_ms: int | None  # ... only if the last heartbeat is still this one
    heartbeat_at_ms: int | None  # record a heartbeat at this time
    more: bool  # more minutes are due than one batch holds

    @property
    def writes(self) -> bool:
        return self.minutes > 0 or self.end_reason is not None or self.heartbeat_at_ms is not None


def _nothing(billed: int) -> Plan:
    return Plan(billed + 1, 0, None, None, False, None, None, False)


def minutes_begun(accepted_at_ms: int, period_ms: int, at_ms: int, *, inclusive: bool) -> int:
    """Minutes begun by `at_ms` (minute k begins at accepted_at + (k-1)*period).
    inclusive: a minute beginning exactly at `at_ms` counts (a heartbeat then
    charges it); otherwise only minutes begun strictly before (an end then)."""
    elapsed = at_ms - accepted_at_ms
    if elapsed < 0:
        return 1
    if inclusive:
        return elapsed // period_ms + 1
    return max(1, -(-elapsed // period_ms))


def plan(
    reading: dict[str, Any], now_ms: int, action: Action, timeout_ms: int, max_minutes: int = MAX_MINUTES_PER_BATCH
) -> Plan:
    """What to charge and whether the reading ends, for an active reading."""
    assert reading["status"] == "active" and reading["accepted_at_ms"] is not None
    accepted = int(reading["accepted_at_ms"])
    period_ms = int(reading["billing_period_seconds"]) * 1000
    billed = int(reading["billed_minutes"])
    rate = int(reading["rate_cents_per_minute"])
    last_heartbeat = int(reading["last_heartbeat_at_ms"] or accepted)
    balance = int(reading["wallet_cents"] or 0)

    # Silent for longer than the timeout: the reading ended at its last
    # heartbeat, whoever notices (cron, a late heartbeat, an end).
    stale = now_ms - last_heartbeat > timeout_ms
    reason: str | None
    if stale:
        due = minutes_begun(accepted, period_ms, last_heartbeat, inclusive=True)
        reason, ended_at, when_heartbeat = "heartbeat_timeout", last_heartbeat, last_heartbeat
    elif action == "timeout":
        return _nothing(billed)
    elif action == "heartbeat":
        due = minutes_begun(accepted, period_ms, now_ms, inclusive=True)
        reason, ended_at, when_heartbeat = None, None, None
    else:
        due = minutes_begun(accepted, period_ms, now_ms, inclusive=False)
        reason, ended_at, when_heartbeat = action, max(now_ms, accepted), None
    need = max(0, due - billed)
    affordable = max(0, balance) // rate
    heartbeat_at = now_ms if action == "heartbeat" and not stale else None

    if need > affordable and affordable < max_minutes:
        # The wallet runs out: the reading ends when the last paid minute does.
        return Plan(
            billed + 1,
            affordable,
            "insufficient_funds",
            accepted + (billed + affordable) * period_ms,
            True,
            None,
            heartbeat_at,
            False,
        )
    if need > max_minutes:
        return Plan(billed + 1, max_minutes, None, None, False, None, heartbeat_at, True)
    return Plan(billed + 1, need, reason, ended_at, False, when_heartbeat, heartbeat_at, False)


def charge_statements(reading: dict[str, Any], minute: int, now_ms: int, by_user_id: int | None) -> list[Statement]:
    """Minute `minute` of the reading: its transfer and its charge row."""
    reading_id = int(reading["id"])
    rate = int(reading["rate_cents_per_minute"])
    advisor_part = int(reading["advisor_cents_per_minute"])
    platform_part = int(reading["platform_cents_per_minute"])
    legs = [ledger.Leg(ledger.wallet_of(int(reading["client_id"])), -rate)]
    if advisor_part:
        legs.append(ledger.Leg(ledger.earnings_of(int(reading["advisor_id"])), advisor_part))
    if platform_part:
        legs.append(ledger.Leg(ledger.PLATFORM_REVENUE, platform_part))
    transfer_id = new_id()
    return [
        *ledger.transfer(
            transfer_id=transfer_id,
            key=f"reading:{reading_id}:minute:{minute}",
            kind="reading_charge",
            legs=legs,
            now_ms=now_ms,
            reference_type="reading",
            reference_id=reading_id,
            requested_by_user_id=by_user_id,
        ),
        # The trigger checks order, status, rate and the transfer, then moves
        # readings.billed_minutes to this minute.
        sql(
            """INSERT INTO reading_charges (reading_id, minute, transfer_id, amount_cents, charged_at_ms)
               VALUES (?, ?, ?, ?, ?)""",
            reading_id,
            minute,
            transfer_id,
            rate,
            now_ms,
        ),
    ]


_END = """
UPDATE readings
SET status = 'ended', end_reason = ?, ended_at_ms = ?, version = version + 1
WHERE id = ? AND status = 'active' AND billed_minutes = ?
  AND (? = 0 OR (SELECT balance_cents FROM accounts
                 WHERE owner_user_id = readings.client_id AND kind = 'client_wallet') < rate_cents_per_minute)
  AND (? IS NULL OR last_heartbeat_at_ms = ?)"""

_HEARTBEAT = """
UPDATE readings SET last_heartbeat_at_ms = max(coalesce(last_heartbeat_at_ms, 0), ?)
WHERE id = ? AND status = 'active' AND billed_minutes = ?"""


def batch_for(reading: dict[str, Any], p: Plan, now_ms: int, by_user_id: int | None) -> tuple[list[Statement], bool]:
    """The plan's statements (ending with a fresh read of the reading), and
    whether the batch holds a conditional update that must change one row."""
    statements: list[Statement] = []
    for minute in range(p.first_minute, p.first_minute + p.minutes):
        statements += charge_statements(reading, minute, now_ms, by_user_id)
    billed_after = p.first_minute - 1 + p.minutes
    conditional = False
    if p.heartbeat_at_ms is not None:
        statements.append(sql(_HEARTBEAT, p.heartbeat_at_ms, reading["id"], billed_after))
        conditional = True
    if p.end_reason is not None:
        # An end replaces the heartbeat's check: both conditions must hold.
        if conditional:
            statements.pop()
        statements.append(
            sql(
                _END,
                p.end_reason,
                p.ended_at_ms,
                reading["id"],
                billed_after,
                1 if p.when_short_of_funds else 0,
                p.when_heartbeat_at_ms,
                p.when_heartbeat_at_ms,
            )
        )
        conditional = True
    statements.append(sql(SELECT_READING, reading["id"]))
    return statements, conditional


_RETRY_TRIGGERS = {"insufficient_funds", "reading_not_billable"}


async def advance(
    db: Database, reading: dict[str, Any], now_ms: int, action: Action, timeout_ms: int, by_user_id: int | None
) -> dict[str, Any]:
    """Charge what is due and end the reading if it must; returns the fresh row.
    A reading that is not active is returned as it is."""
    attempts = batches = 0
    while reading["status"] == "active":
        p = plan(reading, now_ms, action, timeout_ms)
        if not p.writes:
            return reading
        statements, conditional = batch_for(reading, p, now_ms, by_user_id)
        try:
            results = await db.batch(statements)
        except (TriggerAbort, UniqueViolation) as exc:
            if isinstance(exc, TriggerAbort) and exc.code not in _RETRY_TRIGGERS:
                raise
            # Someone charged, ended or moved money first: re-plan from what is there now.
            attempts += 1
            if attempts >= MAX_ATTEMPTS:
                raise service_unavailable("The reading is changing under many requests; retry.") from None
            fresh = await db.first(sql(SELECT_READING, reading["id"]))
            assert fresh is not None
            reading = fresh
            continue
        fresh_rows = results[-1].rows
        assert len(fresh_rows) == 1
        reading = fresh_rows[0]
        if conditional and results[-2].changes != 1:
            # The charges (if any) went through; the end/heartbeat saw a
            # different reading (e.g. a deposit arrived): re-plan.
            attempts += 1
            if attempts >= MAX_ATTEMPTS:
                raise service_unavailable("The reading is changing under many requests; retry.")
            continue
        batches += 1
        if not p.more or batches >= MAX_BATCHES_PER_CALL:
            return reading
    return reading


def balance_view(reading: dict[str, Any], viewer_id: int) -> dict[str, Any]:
    """balance_cents (to the client only: the advisor sees minutes, not money),
    minutes_left the wallet can still pay, and the low-balance warning."""
    balance = int(reading["wallet_cents"] or 0)
    minutes_left = max(0, balance) // int(reading["rate_cents_per_minute"])
    return {
        "balance_cents": balance if viewer_id == int(reading["client_id"]) else None,
        "minutes_left": minutes_left,
        "low_balance": minutes_left < LOW_BALANCE_MINUTES,
    }
