"""Per-minute billing of an active reading, race-free on D1.

Minute k of a reading begins at accepted_at + (k-1) * period and is charged
when it begins: one balanced ledger transfer (key `reading:<id>:minute:<k>`:
the client's wallet pays the rate, split between the advisor's earnings and
platform revenue) plus a `reading_charges` row. Everything one call charges
goes into ONE batch (one transaction, one D1 round trip).

Presence (migration 0040). Each side's last heartbeat is its own column
(NULL: nothing since the accept, read as accepted_at). A reading is live while
neither side has been silent longer than its heartbeat timeout (a term fixed
at request time). The client pays, so:
  - the client's own heartbeat or end bills every minute begun so far;
  - the advisor's heartbeat or end bills only minutes begun by the client's
    last heartbeat (it never bills time the client was not seen in);
  - once a side has been silent past the timeout nothing more is billed and
    the reading ends at that side's last heartbeat (`heartbeat_timeout`,
    `silent_party` says who), whoever notices: a heartbeat, an end, the cron.
A side silent for less than the timeout is still there (a dropped
connection): minutes begun while the ADVISOR is briefly quiet are billed by
the client's heartbeats; minutes begun while the CLIENT is quiet are billed
only if the client comes back in time.

Nothing here trusts what Python read. The SQL refuses, and rolls the batch
back, whenever the read was stale (migrations 0002, 0020 and 0040):
  - a transfer key or (reading, minute) charged before -> UNIQUE;
  - a minute out of order, or an inactive reading     -> reading_not_billable;
  - a minute the presence rules above forbid          -> reading_party_silent;
  - a wallet that cannot pay                          -> insufficient_funds;
and the heartbeat and status changes at the end of a batch are conditional
UPDATEs on status, billed_minutes and presence (a heartbeat is recorded only
while the reading is live, so a side silent past the timeout cannot be
revived; a timeout end only while the silent side's heartbeat is still the
one planned on and still past the timeout; a participant's end only while
the reading is live). A refused batch is re-planned from a fresh read, a
bounded number of times. So heartbeats from both participants, `end`,
retries and the cron can all race and every minute is charged at most once.

Promo credit (promo.py, migration 0091) pays first: each minute draws on the
client's grants valid when it began, earliest expiry first, and the wallet
pays the rest; the charge row records the promo part and its trigger checks the
split, the order and that the wallet paid nothing a valid grant could
(promo_not_first, promo_grant_order; promo_out_of_step at the posting when a
grant moved meanwhile): all re-planned like the refusals above.

`plan()` is pure: given the reading (with the client's wallet and live grants),
the time, what is asked and by whom, it says how each minute to charge is paid
and whether and how the reading ends.
"""

from dataclasses import dataclass
from typing import Any, Literal

from . import offers, promo
from .charges import LOW_BALANCE_MINUTES, balance_view, charge_statements, first_minute_pay, fit_batch
from .db import Database, Statement, TriggerAbort, UniqueViolation, sql
from .errors import service_unavailable

Action = Literal["heartbeat", "client_ended", "advisor_ended", "timeout"]
Party = Literal["client", "advisor"]

# 6 statements per minute (transfer, 3 entries, post, charge row) + 2 more:
# 15 minutes = 92 statements, inside our 100-statement batch cap. A minute paid
# by promo credit has one more entry per account and one statement per grant it
# draws on: the plan stops a batch early when it would not fit.
MAX_MINUTES_PER_BATCH = 15
# A call charges at most this many batches' worth (the rest on the next call).
MAX_BATCHES_PER_CALL = 4
# Re-plans after a batch the SQL refused because someone else moved first.
MAX_ATTEMPTS = 5
# Re-exported: the charge of one minute and the client's balance view live in charges.py.
__all__ = ["LOW_BALANCE_MINUTES", "balance_view", "charge_statements", "first_minute_pay"]

READING_COLUMNS = """
  r.id, r.client_id, r.advisor_id, r.channel, r.status, r.rate_cents_per_minute, r.advisor_cents_per_minute,
  r.platform_cents_per_minute, r.billing_period_seconds, r.billed_minutes, r.end_reason, r.requested_at_ms,
  r.accepted_at_ms, r.ended_at_ms, r.last_heartbeat_at_ms, r.client_heartbeat_at_ms, r.advisor_heartbeat_at_ms,
  r.heartbeat_timeout_seconds, r.silent_party, r.version, r.promo_advisor_cents_per_minute,
  (SELECT balance_cents FROM accounts WHERE owner_user_id = r.client_id AND kind = 'client_wallet') AS wallet_cents"""

# What charging needs beside the row (lists do without): the client's live promo
# grants. What a reading's routes read: that, and while the reading is requested
# what its accept needs (offers.py).
CHARGE_COLUMNS = f"""{READING_COLUMNS},
  {promo.LIVE_GRANTS_OF_READING} AS promo_grants_json"""
BILLING_COLUMNS = CHARGE_COLUMNS + offers.OFFER_COLUMNS

SELECT_READING = f"SELECT {BILLING_COLUMNS} FROM readings r WHERE r.id = ?"  # noqa: S608 - constant text

# When each side was last heard (NULL: not since the accept), the earlier of
# the two (the index readings_active_by_presence is on exactly this
# expression), and the reading's timeout: SQL fragments, constant text.
CLIENT_SEEN = "coalesce(client_heartbeat_at_ms, accepted_at_ms)"
ADVISOR_SEEN = "coalesce(advisor_heartbeat_at_ms, accepted_at_ms)"
BOTH_SEEN = f"min({CLIENT_SEEN}, {ADVISOR_SEEN})"
_TIMEOUT_MS = "heartbeat_timeout_seconds * 1000"


@dataclass(frozen=True, slots=True)
class Plan:
    first_minute: int  # the first minute to charge (billed_minutes + 1)
    minutes: int  # how many to charge in this batch
    end_reason: str | None  # the reading ends in this batch, for this reason
    ended_at_ms: int | None
    # Conditions of the end (each also re-checked in SQL):
    when_short_of_funds: bool  # ... only if the wallet cannot pay the next minute
    when_heartbeat_at_ms: int | None  # ... (a timeout) only if both sides' earlier last heartbeat is still this one
    heartbeat_at_ms: int | None  # record a heartbeat at this time ...
    heartbeat_by: Party | None  # ... from this side
    more: bool  # more minutes are due than one batch holds
    pays: tuple[promo.MinutePay, ...] = ()  # how each of the minutes is paid (promo part, grants)

    @property
    def writes(self) -> bool:
        return self.minutes > 0 or self.end_reason is not None or self.heartbeat_at_ms is not None


def _nothing(billed: int) -> Plan:
    return Plan(billed + 1, 0, None, None, False, None, None, None, False)


def seen_at(reading: dict[str, Any]) -> tuple[int, int]:
    """(client, advisor): when each side was last heard; nothing since the accept = the accept."""
    accepted = int(reading["accepted_at_ms"])
    client, advisor = reading.get("client_heartbeat_at_ms"), reading.get("advisor_heartbeat_at_ms")
    return (accepted if client is None else int(client)), (accepted if advisor is None else int(advisor))


def silent_party(client_seen: int, advisor_seen: int) -> str:
    """Who went silent first (the side whose last heartbeat a timeout ends the reading at)."""
    if client_seen < advisor_seen:
        return "client"
    return "advisor" if advisor_seen < client_seen else "both"


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
    reading: dict[str, Any],
    now_ms: int,
    action: Action,
    party: Party | None,
    max_minutes: int = MAX_MINUTES_PER_BATCH,
) -> Plan:
    """What to charge and whether the reading ends, for an active reading,
    when `party` (None: the cron) asks for `action` at `now_ms`."""
    assert reading["status"] == "active" and reading["accepted_at_ms"] is not None
    accepted = int(reading["accepted_at_ms"])
    period_ms = int(reading["billing_period_seconds"]) * 1000
    timeout_ms = int(reading["heartbeat_timeout_seconds"]) * 1000
    billed = int(reading["billed_minutes"])
    rate = int(reading["rate_cents_per_minute"])
    client_seen, advisor_seen = seen_at(reading)
    both_seen = min(client_seen, advisor_seen)

    # A side silent for longer than the timeout: the reading ended at that
    # side's last heartbeat, whoever notices (cron, a heartbeat, an end).
    stale = now_ms - both_seen > timeout_ms
    reason: str | None
    if stale:
        due = minutes_begun(accepted, period_ms, both_seen, inclusive=True)
        reason, ended_at, when_heartbeat = "heartbeat_timeout", both_seen, both_seen
    elif action == "timeout":
        return _nothing(billed)
    else:
        # The client pays only for minutes it was seen in: its own request is
        # its presence now; for the advisor, the client's last heartbeat.
        client_at = now_ms if party == "client" else min(now_ms, client_seen)
        if action == "heartbeat":
            due = minutes_begun(accepted, period_ms, client_at, inclusive=True)
            reason, ended_at = None, None
        else:
            due = min(
                minutes_begun(accepted, period_ms, now_ms, inclusive=False),
                minutes_begun(accepted, period_ms, client_at, inclusive=True),
            )
            reason, ended_at = action, max(now_ms, accepted)
        when_heartbeat = None
    need = max(0, due - billed)
    beat = action == "heartbeat" and not stale and party is not None
    heartbeat_at, heartbeat_by = (now_ms, party) if beat else (None, None)

    horizon = min(need, max_minutes)
    grants = promo.parse_grants(reading.get("promo_grants_json"))
    begins = [accepted + (billed + i) * period_ms for i in range(horizon)]
    pays, stop = promo.allocate(
        grants, int(reading["wallet_cents"] or 0), rate, begins, complete=promo.grants_complete(grants)
    )
    fitting = fit_batch(reading, pays)
    if len(fitting) < len(pays):
        pays, stop = fitting, "budget"
    paid = len(pays)
    if stop == "funds":
        # The money runs out: the reading ends when the last paid minute does.
        return Plan(
            billed + 1,
            paid,
            "insufficient_funds",
            accepted + (billed + paid) * period_ms,
            True,
            None,
            heartbeat_at,
            heartbeat_by,
            False,
            tuple(pays),
        )
    if stop is not None or need > max_minutes:
        # More is due than this batch holds (minutes, statements, or grants not read).
        return Plan(billed + 1, paid, None, None, False, None, heartbeat_at, heartbeat_by, True, tuple(pays))
    return Plan(
        billed + 1, need, reason, ended_at, False, when_heartbeat, heartbeat_at, heartbeat_by, False, tuple(pays)
    )


# Ends the reading. Every end: still active, billed as planned, and
#   insufficient_funds  ... the wallet and the promo credit valid when the next
#                           minute begins cannot pay it;
#   heartbeat_timeout   ... the earlier of the two last heartbeats is still the
#                           one planned on (ended_at) and older than the timeout;
#   client/advisor_ended ... neither side has been silent past the timeout.
# silent_party: who went silent first, from the same columns.
_END = f"""
UPDATE readings
SET status = 'ended', end_reason = ?, ended_at_ms = ?, version = version + 1,
    silent_party = CASE WHEN ? = 'heartbeat_timeout' THEN
      CASE WHEN {CLIENT_SEEN} < {ADVISOR_SEEN} THEN 'client'
           WHEN {ADVISOR_SEEN} < {CLIENT_SEEN} THEN 'advisor' ELSE 'both' END END
WHERE id = ? AND status = 'active' AND billed_minutes = ?
  AND (? = 0 OR max(0, (SELECT balance_cents FROM accounts
                        WHERE owner_user_id = readings.client_id AND kind = 'client_wallet'))
                 + (SELECT coalesce(sum(g.remaining_cents), 0) FROM promo_grants g
                    WHERE g.client_id = readings.client_id AND g.remaining_cents > 0
                      AND g.expires_at_ms > accepted_at_ms + billed_minutes * billing_period_seconds * 1000)
                 < rate_cents_per_minute)
  AND CASE ?
        WHEN 'heartbeat_timeout' THEN ? - {BOTH_SEEN} > {_TIMEOUT_MS} AND {BOTH_SEEN} = ?
        WHEN 'insufficient_funds' THEN 1
        ELSE ? - {BOTH_SEEN} <= {_TIMEOUT_MS}
      END"""  # noqa: S608 - constant text, `?` placeholders only

# A heartbeat from one side, recorded only while the reading is live: a side
# silent past the timeout is not revived by coming back (the reading is over).
_HEARTBEAT_LIVE = f"""
WHERE id = ? AND status = 'active' AND billed_minutes = ?
  AND ? - {BOTH_SEEN} <= {_TIMEOUT_MS}"""
_HEARTBEAT = {
    "client": f"""
UPDATE readings SET client_heartbeat_at_ms = max({CLIENT_SEEN}, ?),
                    last_heartbeat_at_ms = max(coalesce(last_heartbeat_at_ms, 0), ?)"""  # noqa: S608 - constant text
    + _HEARTBEAT_LIVE,
    "advisor": f"""
UPDATE readings SET advisor_heartbeat_at_ms = max({ADVISOR_SEEN}, ?),
                    last_heartbeat_at_ms = max(coalesce(last_heartbeat_at_ms, 0), ?)"""  # noqa: S608 - constant text
    + _HEARTBEAT_LIVE,
}


def batch_for(reading: dict[str, Any], p: Plan, now_ms: int, by_user_id: int | None) -> tuple[list[Statement], bool]:
    """The plan's statements (ending with a fresh read of the reading), and
    whether the batch holds a conditional update that must change one row."""
    statements: list[Statement] = []
    assert len(p.pays) == p.minutes, "every minute charged has its payment planned"
    for minute, pay in zip(range(p.first_minute, p.first_minute + p.minutes), p.pays, strict=True):
        statements += charge_statements(reading, minute, now_ms, by_user_id, pay)
    billed_after = p.first_minute - 1 + p.minutes
    conditional = False
    if p.end_reason is not None:
        # An end replaces the heartbeat (the reading is over either way).
        statements.append(
            sql(
                _END,
                p.end_reason,
                p.ended_at_ms,
                p.end_reason,
                reading["id"],
                billed_after,
                1 if p.when_short_of_funds else 0,
                p.end_reason,
                now_ms,
                p.when_heartbeat_at_ms,
                now_ms,
            )
        )
        conditional = True
    elif p.heartbeat_at_ms is not None:
        assert p.heartbeat_by is not None
        statements.append(
            sql(
                _HEARTBEAT[p.heartbeat_by],
                p.heartbeat_at_ms,
                p.heartbeat_at_ms,
                reading["id"],
                billed_after,
                p.heartbeat_at_ms,
            )
        )
        conditional = True
    statements.append(sql(SELECT_READING, reading["id"]))
    return statements, conditional


# A grant moved since the read (a racing charge, an expiry, a new grant).
PROMO_RETRY_CODES = frozenset({"promo_out_of_step", "promo_not_first", "promo_grant_order"})
_RETRY_TRIGGERS = {"insufficient_funds", "reading_not_billable", "reading_party_silent", *PROMO_RETRY_CODES}


def party_of(reading: dict[str, Any], user_id: int | None) -> Party | None:
    if user_id == int(reading["client_id"]):
        return "client"
    return "advisor" if user_id == int(reading["advisor_id"]) else None


async def advance(
    db: Database, reading: dict[str, Any], now_ms: int, action: Action, by_user_id: int | None
) -> dict[str, Any]:
    """Charge what is due and end the reading if it must; returns the fresh row.
    `by_user_id` is the participant asking (None: the cron). A reading that is
    not active is returned as it is."""
    attempts = batches = 0
    party = party_of(reading, by_user_id)
    while reading["status"] == "active":
        p = plan(reading, now_ms, action, party)
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
