"""Promotional credit: a client's promo balance beside the wallet (migration 0091).

Money. Every grant is a transfer from platform_promotions (account 3) to the
client's `client_promo` account (made by the client's first grant), plus a
`promo_grants` row holding the grant's `remaining_cents` and `expires_at_ms`,
in one batch. Promo credit is spent FIRST by minute charges (billing.py), then
the wallet; it expires (the cron returns what is left of an expired grant to
platform_promotions by a `promo_expiry` transfer); a reading refund gives
promo-paid cents back as a new grant (refunds.py). It never reaches a card, a
payout or the wallet: the SQL refuses any such transfer.

Attribution: a charge draws from the grants valid when the minute BEGAN
(expires_at_ms after the minute's start), earliest expiry first, then by id
(FIFO by expiry: the credit about to lapse is used before credit that keeps).
Each drawn grant's remaining_cents moves in the charge's batch; posting any
transfer with a client_promo leg is refused unless the account's balance
equals the sum of its grants' remaining_cents, so the account and the grants
can never drift, and a plan made from a stale read (a racing charge, an
expiry, a new grant) aborts its batch and is re-planned.

Who pays a promo-paid minute: the platform. The advisor gets the share fixed on
the reading when it was requested (PROMO_ADVISOR_SHARE_BPS of the rate; unset:
the same share as for a wallet-paid minute), and the rest of the promo cents
goes back to platform_promotions, not to platform_revenue (no real money came
in). platform_promotions is therefore -(promo credit outstanding) - (what
promotions have cost: advisor shares of promo-paid cents), and the ledger check
reconciles it against the grants, charges, refunds and clawbacks.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from . import ledger, logs
from .clock import rfc3339
from .db import Database, Statement, TriggerAbort, UniqueViolation, sql
from .ids import new_id

Source = Literal["promo_code", "free_minutes", "satisfaction", "reading_refund"]
GrantKind = Literal["promo_grant", "satisfaction_credit"]

# The live grants read with a reading (FIFO order). A client with more than this
# many is charged from these first; a minute they cannot cover waits for the next
# batch rather than touch the wallet early (billing.py).
GRANTS_READ = 20
DAY_MS = 86_400_000
MAX_EXPIRIES_PER_RUN = 20
# The cron sweeps every minute, a bounded number of grants per run: a grant still
# holding credit this long after its expiry means the sweep is not keeping up.
EXPIRY_GRACE_MS = 15 * 60 * 1000

# The live grants of a reading `r`'s client, FIFO order (a constant SQL fragment).
LIVE_GRANTS_OF_READING = f"""(SELECT json_group_array(json_array(g.id, g.remaining_cents, g.expires_at_ms))
   FROM (SELECT id, remaining_cents, expires_at_ms FROM promo_grants
         WHERE client_id = r.client_id AND remaining_cents > 0
         ORDER BY expires_at_ms, id LIMIT {GRANTS_READ}) g)"""  # noqa: S608 - constant text


# What one charge row `c` of reading `r` paid the advisor and platform_promotions
# (minute_split in SQL, the same integer arithmetic): constant SQL fragments.
CHARGE_ADVISOR_CENTS = """(r.advisor_cents_per_minute - r.advisor_cents_per_minute * c.promo_cents / c.amount_cents
   + coalesce(r.promo_advisor_cents_per_minute, r.advisor_cents_per_minute) * c.promo_cents / c.amount_cents)"""
CHARGE_PROMOTIONS_CENTS = """(c.promo_cents
   - coalesce(r.promo_advisor_cents_per_minute, r.advisor_cents_per_minute) * c.promo_cents / c.amount_cents)"""


@dataclass(frozen=True, slots=True)
class Grant:
    id: int
    remaining_cents: int
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class MinutePay:
    """How one minute is paid: promo_cents from these grants (id, cents), FIFO; the rest from the wallet."""

    promo_cents: int
    takes: tuple[tuple[int, int], ...] = ()


NO_PROMO = MinutePay(0)


def parse_grants(raw: str | None) -> list[Grant]:
    if not raw:
        return []
    return [Grant(int(i), int(cents), int(expires)) for i, cents, expires in json.loads(raw)]


def grants_complete(grants: Sequence[Grant]) -> bool:
    """Whether the list holds every live grant (fewer than the read's limit)."""
    return len(grants) < GRANTS_READ


def live_cents(grants: Sequence[Grant], at_ms: int) -> int:
    """Promo credit valid at `at_ms` (expired credit awaiting the sweep does not count)."""
    return sum(g.remaining_cents for g in grants if g.expires_at_ms > at_ms)


def allocate(
    grants: Sequence[Grant], wallet_cents: int, rate: int, begins: Sequence[int], *, complete: bool = True
) -> tuple[list[MinutePay], str | None]:
    """How each minute (by its start time) is paid: promo first from the grants
    valid when it began, earliest expiry first, then the wallet. Stops at the
    first minute that cannot be paid ("funds"), or that may need a grant the
    list does not hold ("grants": `complete` False). The SQL re-checks it all."""
    left = {g.id: g.remaining_cents for g in grants}
    order = sorted(grants, key=lambda g: (g.expires_at_ms, g.id))
    wallet = max(0, wallet_cents)
    pays: list[MinutePay] = []
    for begin in begins:
        need = rate
        takes: list[tuple[int, int]] = []
        for g in order:
            if need == 0:
                break
            if g.expires_at_ms <= begin or left[g.id] == 0:
                continue
            take = min(need, left[g.id])
            takes.append((g.id, take))
            need -= take
        if need and not complete:
            return pays, "grants"
        if need > wallet:
            return pays, "funds"
        for grant_id, take in takes:
            left[grant_id] -= take
        wallet -= need
        pays.append(MinutePay(rate - need, tuple(takes)))
    return pays, None


def payable_minutes(grants: Sequence[Grant], wallet_cents: int, rate: int, start_ms: int, period_ms: int) -> int:
    """How many minutes from `start_ms` (then every `period_ms`) promo credit and
    the wallet pay, drawn as allocate() draws them: promo valid when each minute
    begins first, then the wallet; once no valid promo is left, whole minutes of
    the wallet. The loop runs once per promo-paid minute at most."""
    left = {g.id: g.remaining_cents for g in grants}
    order = sorted(grants, key=lambda g: (g.expires_at_ms, g.id))
    wallet, minutes, begin = max(0, wallet_cents), 0, start_ms
    while any(left[g.id] and g.expires_at_ms > begin for g in order):
        need = rate
        for g in order:
            if need and left[g.id] and g.expires_at_ms > begin:
                take = min(need, left[g.id])
                left[g.id] -= take
                need -= take
        if need > wallet:
            return minutes
        wallet -= need
        minutes += 1
        begin += period_ms
    return minutes + wallet // rate


def everything_valid(grants: Sequence[Grant], rate: int, begin: int) -> MinutePay:
    """Minute 1 when the plan says it cannot be paid: all valid promo, the rest
    from the wallet, so the SQL decides on fresh balances (insufficient_funds)."""
    need, takes = rate, []
    for g in sorted(grants, key=lambda g: (g.expires_at_ms, g.id)):
        if need and g.expires_at_ms > begin and g.remaining_cents:
            take = min(need, g.remaining_cents)
            takes.append((g.id, take))
            need -= take
    return MinutePay(rate - need, tuple(takes))


def minute_split(rate: int, advisor: int, promo_advisor: int, promo_cents: int) -> tuple[int, int, int]:
    """(advisor, platform_revenue, platform_promotions) cents of a minute with
    `promo_cents` paid by promo credit; the same integer arithmetic as the
    trigger reading_charges_check. With no promo: (advisor, the platform part, 0)."""
    assert 0 <= promo_cents <= rate and 0 <= advisor <= rate and 0 <= promo_advisor <= rate
    from_promo = promo_advisor * promo_cents // rate
    advisor_cents = advisor - advisor * promo_cents // rate + from_promo
    promotions = promo_cents - from_promo
    revenue = rate - advisor_cents - promotions
    assert advisor_cents >= 0 and promotions >= 0 and revenue >= 0
    return advisor_cents, revenue, promotions


def spend_statements(client_id: int, transfer_id: int, takes: Sequence[tuple[int, int]]) -> list[Statement]:
    """The client's grant rows drawn by a charge (before its entries: the posting
    compares them). A grant that no longer holds the cents changes nothing here
    and the posting refuses."""
    return [
        sql(
            """UPDATE promo_grants SET remaining_cents = remaining_cents - ?, last_transfer_id = ?
               WHERE id = ? AND client_id = ? AND remaining_cents >= ?""",
            cents,
            transfer_id,
            grant_id,
            client_id,
            cents,
        )
        for grant_id, cents in takes
    ]


def ensure_account(client_id: int, now_ms: int) -> Statement:
    """The client's promo account, made by its first grant (a no-op afterwards)."""
    return sql(
        """INSERT INTO accounts (id, kind, owner_user_id, created_at_ms)
           VALUES (?, 'client_promo', ?, ?) ON CONFLICT DO NOTHING""",
        new_id(),
        client_id,
        now_ms,
    )


@dataclass(frozen=True, slots=True)
class NewGrant:
    """A grant to make: statements from grant_statements(); `grant` for planning a charge in the same batch."""

    grant: Grant
    transfer_id: int
    statements: list[Statement]


def grant_row(
    *,
    grant_id: int,
    client_id: int,
    source: Source,
    transfer_id: int,
    amount_cents: int,
    now_ms: int,
    expires_at_ms: int,
    redemption_id: int | None = None,
    offer_id: int | None = None,
    claim_id: int | None = None,
    reading_id: int | None = None,
) -> Statement:
    return sql(
        """INSERT INTO promo_grants (id, client_id, source, transfer_id, redemption_id, offer_id, claim_id,
                                     reading_id, amount_cents, remaining_cents, granted_at_ms, expires_at_ms,
                                     last_transfer_id)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        grant_id,
        client_id,
        source,
        transfer_id,
        redemption_id,
        offer_id,
        claim_id,
        reading_id,
        amount_cents,
        amount_cents,
        now_ms,
        expires_at_ms,
        transfer_id,
    )


def grant_statements(
    *,
    client_id: int,
    amount_cents: int,
    now_ms: int,
    expires_at_ms: int,
    source: Source,
    kind: GrantKind = "promo_grant",
    requested_by_user_id: int | None = None,
    redemption_id: int | None = None,
    offer_id: int | None = None,
    claim_id: int | None = None,
    reading_id: int | None = None,
) -> NewGrant:
    """Promo credit from platform_promotions: the account, the grant row, the transfer (one batch)."""
    assert amount_cents > 0 and expires_at_ms > now_ms
    grant_id, transfer_id = new_id(), new_id()
    row = grant_row(
        grant_id=grant_id,
        client_id=client_id,
        source=source,
        transfer_id=transfer_id,
        amount_cents=amount_cents,
        now_ms=now_ms,
        expires_at_ms=expires_at_ms,
        redemption_id=redemption_id,
        offer_id=offer_id,
        claim_id=claim_id,
        reading_id=reading_id,
    )
    statements = [
        ensure_account(client_id, now_ms),
        *ledger.transfer(
            transfer_id=transfer_id,
            key=f"promo:grant:{grant_id}",
            kind=kind,
            legs=[
                ledger.Leg(ledger.promo_of(client_id), amount_cents),
                ledger.Leg(ledger.PLATFORM_PROMOTIONS, -amount_cents),
            ],
            now_ms=now_ms,
            reference_type="promo_grant",
            reference_id=grant_id,
            requested_by_user_id=requested_by_user_id,
            before_entries=[row],
        ),
    ]
    return NewGrant(Grant(grant_id, amount_cents, expires_at_ms), transfer_id, statements)


# --- the balance a client sees ------------------------------------------------

# Valid promo credit of the client (?, at ?), and its next expiry: the earliest
# expires_at_ms of a valid grant and what expires then.
BALANCE_COLUMNS = """
  (SELECT coalesce(sum(remaining_cents), 0) FROM promo_grants
   WHERE client_id = ? AND remaining_cents > 0 AND expires_at_ms > ?) AS promo_cents,
  (SELECT json_array(expires_at_ms, (SELECT sum(remaining_cents) FROM promo_grants h
                                     WHERE h.client_id = g.client_id AND h.remaining_cents > 0
                                       AND h.expires_at_ms = g.expires_at_ms))
   FROM promo_grants g WHERE g.client_id = ? AND g.remaining_cents > 0 AND g.expires_at_ms > ?
   ORDER BY g.expires_at_ms LIMIT 1) AS promo_next"""


def balance_view(row: dict[str, Any]) -> dict[str, Any]:
    """promo_cents (valid now), promo_next_expires_at and the cents expiring then (null: none)."""
    nxt = json.loads(row["promo_next"]) if row.get("promo_next") else None
    return {
        "promo_cents": int(row["promo_cents"] or 0),
        "promo_next_expires_at": rfc3339(int(nxt[0])) if nxt else None,
        "promo_next_expiring_cents": int(nxt[1]) if nxt else None,
    }


BALANCE_SCHEMA: dict[str, Any] = {
    "promo_cents": {
        "type": "integer",
        "minimum": 0,
        "description": "Promotional credit valid now: spent before the wallet, never refunded to a card or paid out.",
    },
    "promo_next_expires_at": {
        "type": ["string", "null"],
        "format": "date-time",
        "description": "When the next promo credit expires (null: none).",
    },
    "promo_next_expiring_cents": {
        "type": ["integer", "null"],
        "description": "How much promo credit expires then (null: none).",
    },
}


# --- expiry (the cron) -----------------------------------------------------------

_EXPIRED = """
SELECT id, client_id, remaining_cents, expires_at_ms FROM promo_grants
WHERE remaining_cents > 0 AND expires_at_ms <= ?
ORDER BY expires_at_ms LIMIT ?"""


def expiry_statements(grant: dict[str, Any], now_ms: int) -> list[Statement]:
    """What is left of an expired grant back to platform_promotions (one batch).
    Conditional on the amount read: if a charge drew from it meanwhile, the
    grant does not move and the posting refuses (promo_out_of_step)."""
    grant_id, cents, transfer_id = int(grant["id"]), int(grant["remaining_cents"]), new_id()
    return ledger.transfer(
        transfer_id=transfer_id,
        key=f"promo:grant:{grant_id}:expiry",
        kind="promo_expiry",
        legs=[
            ledger.Leg(ledger.promo_of(int(grant["client_id"])), -cents),
            ledger.Leg(ledger.PLATFORM_PROMOTIONS, cents),
        ],
        now_ms=now_ms,
        reference_type="promo_grant",
        reference_id=grant_id,
        before_entries=[
            sql(
                """UPDATE promo_grants SET remaining_cents = 0, expired_cents = expired_cents + ?, last_transfer_id = ?
                   WHERE id = ? AND client_id = ? AND remaining_cents = ?""",
                cents,
                transfer_id,
                grant_id,
                int(grant["client_id"]),
                cents,
            )
        ],
    )


async def expire_credit(db: Database, now_ms: int, call_budget: int) -> dict[str, int]:
    """Expired, unspent promo credit back to platform_promotions: one batch per
    grant, at most MAX_EXPIRIES_PER_RUN grants and until the run's D1 calls reach
    `call_budget`. A grant a charge drew from meanwhile is left for the next run."""
    due = await db.all(sql(_EXPIRED, now_ms, MAX_EXPIRIES_PER_RUN))
    expired = cents = 0
    for grant in due.rows:
        if db.counters.calls >= call_budget:
            break
        try:
            await db.batch(expiry_statements(grant, now_ms))
        except (TriggerAbort, UniqueViolation) as exc:
            # A charge drew from it, or another run expired it: the next run sees it as it is.
            logs.warning("promo_expiry_skipped", grant_id=grant["id"], code=getattr(exc, "code", "unique"))
            continue
        expired += 1
        cents += int(grant["remaining_cents"])
    return {"promo_grants_expired": expired, "promo_cents_expired": cents}
