"""One minute's charge, promo-aware: its legs, its statements, and what the
client is told about its balance (billing.py plans the minutes; promo.py says
how each is paid; migration 0091's trigger re-checks every leg).

A minute of rate r with p cents paid by promo credit (promo.minute_split):
the wallet pays r - p, the advisor gets its part of the wallet-paid cents plus
its promo share of the promo-paid ones, platform_revenue the rest of the
wallet-paid cents and platform_promotions the rest of the promo-paid cents.
Legs of zero are left out.
"""

from typing import Any

from . import ledger, promo
from .db import MAX_BATCH_STATEMENTS, Statement, sql
from .ids import new_id

LOW_BALANCE_MINUTES = 2
STATEMENTS_PER_BATCH = MAX_BATCH_STATEMENTS - 2  # the end or heartbeat, and the fresh read


def fit_batch(reading: dict[str, Any], pays: list[promo.MinutePay]) -> list[promo.MinutePay]:
    """The first of `pays` whose statements fit one batch."""
    total, fitting = 0, []
    for pay in pays:
        total += 2 + len(pay.takes) + len(minute_legs(reading, pay.promo_cents)) + 1
        if total > STATEMENTS_PER_BATCH:
            break
        fitting.append(pay)
    return fitting


def minute_legs(reading: dict[str, Any], promo_cents: int) -> list[ledger.Leg]:
    """The legs of one minute with `promo_cents` paid by promo credit (promo.minute_split)."""
    rate = int(reading["rate_cents_per_minute"])
    advisor_part = int(reading["advisor_cents_per_minute"])
    promo_part = reading.get("promo_advisor_cents_per_minute")
    promo_advisor = advisor_part if promo_part is None else int(promo_part)
    advisor, revenue, promotions = promo.minute_split(rate, advisor_part, promo_advisor, promo_cents)
    client_id = int(reading["client_id"])
    legs = [
        ledger.Leg(ledger.wallet_of(client_id), promo_cents - rate),
        ledger.Leg(ledger.promo_of(client_id), -promo_cents),
        ledger.Leg(ledger.earnings_of(int(reading["advisor_id"])), advisor),
        ledger.Leg(ledger.PLATFORM_REVENUE, revenue),
        ledger.Leg(ledger.PLATFORM_PROMOTIONS, promotions),
    ]
    return [leg for leg in legs if leg.amount_cents]


def first_minute_pay(reading: dict[str, Any], grants: list[promo.Grant]) -> promo.MinutePay:
    """How minute 1 is paid at the accept (grants: the client's, with any made by this accept).
    Unpayable: all valid promo and the wallet for the rest, so the SQL refuses it."""
    begin = int(reading["accepted_at_ms"])
    rate = int(reading["rate_cents_per_minute"])
    pays, _stop = promo.allocate(grants, int(reading["wallet_cents"] or 0), rate, [begin])
    return pays[0] if pays else promo.everything_valid(grants, rate, begin)


def charge_statements(
    reading: dict[str, Any], minute: int, now_ms: int, by_user_id: int | None, pay: promo.MinutePay = promo.NO_PROMO
) -> list[Statement]:
    """Minute `minute` of the reading: its transfer (the grants it draws on
    first, before its entries) and its charge row."""
    reading_id = int(reading["id"])
    rate = int(reading["rate_cents_per_minute"])
    transfer_id = new_id()
    return [
        *ledger.transfer(
            transfer_id=transfer_id,
            key=f"reading:{reading_id}:minute:{minute}",
            kind="reading_charge",
            legs=minute_legs(reading, pay.promo_cents),
            now_ms=now_ms,
            reference_type="reading",
            reference_id=reading_id,
            requested_by_user_id=by_user_id,
            before_entries=promo.spend_statements(int(reading["client_id"]), transfer_id, pay.takes),
        ),
        # The trigger checks order, status, rate, the split and the promo rules,
        # then moves readings.billed_minutes to this minute.
        sql(
            """INSERT INTO reading_charges (reading_id, minute, transfer_id, amount_cents, promo_cents, charged_at_ms)
               VALUES (?, ?, ?, ?, ?, ?)""",
            reading_id,
            minute,
            transfer_id,
            rate,
            pay.promo_cents,
            now_ms,
        ),
    ]


def balance_view(reading: dict[str, Any], viewer_id: int, now_ms: int) -> dict[str, Any]:
    """To the client: its wallet balance_cents, its valid promo_cents, the
    minutes_left both can still pay (promo first, as billed) and the
    low-balance warning. To the advisor: all null. Each is computed from the
    client's live balances, so any of them (even a minute count, even the
    warning, even on an ended reading) would tell the advisor about the
    client's money."""
    if viewer_id != int(reading["client_id"]):
        return {"balance_cents": None, "promo_cents": None, "minutes_left": None, "low_balance": None}
    balance = int(reading["wallet_cents"] or 0)
    grants = promo.parse_grants(reading.get("promo_grants_json"))
    minutes_left = _minutes_left(reading, grants, balance, now_ms)
    return {
        "balance_cents": balance,
        "promo_cents": promo.live_cents(grants, now_ms),
        "minutes_left": minutes_left,
        "low_balance": minutes_left < LOW_BALANCE_MINUTES,
    }


def _minutes_left(reading: dict[str, Any], grants: list[promo.Grant], wallet: int, now_ms: int) -> int:
    """Further minutes payable from the next one (an active reading's next minute
    begins at its own time; otherwise now), paid as billing would pay them."""
    rate = int(reading["rate_cents_per_minute"])
    if reading["status"] == "active" and reading["accepted_at_ms"] is not None:
        period_ms = int(reading["billing_period_seconds"]) * 1000
        start = max(now_ms, int(reading["accepted_at_ms"]) + int(reading["billed_minutes"]) * period_ms)
    else:
        period_ms, start = 0, now_ms
    return promo.payable_minutes(grants, wallet, rate, start, period_ms)
