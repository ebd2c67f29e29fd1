"""Admin refunds of a reading's charges: `POST /v1/admin/readings/{id}/refund`.

A refund is one `reading_refund` transfer back to the client's wallet, taken
from the advisor's earnings and the platform's revenue in the proportion the
reading was charged (its rate split is fixed on the reading row). The split
is cumulative: after refunds totalling R, the platform has given back exactly
floor(R * platform_part / rate), so partial refunds never take more from
either side than it earned and a full refund returns each side's exact share.

Promo credit (migration 0091): what the reading's minutes drew from promo
credit comes back as promo credit, what the wallet paid back to the wallet,
in proportion (cumulatively, like the split: after refunds totalling R of a
reading charged C of which P by promo, floor(R * P / C) went back to promo,
so a full refund returns each exactly). Each recipient gives back in the same
proportion to what it received from the reading: the advisor, platform_revenue,
and platform_promotions (its part of promo-paid minutes). Promo credit given
back is a new grant valid PROMO_REFUND_CREDIT_DAYS, in the same batch. Each
part is clamped to what is left of it, so refunds on a reading still being
charged can never take more than a side received nor give more than it paid.

One D1 round trip reads the admin (the caller lookup), the reading, its charged
and refunded totals and any stored reply for the Idempotency-Key; one batch writes the transfer, the
`reading_refunds` row and the stored reply. The row's trigger (migration
0010) refuses the write if another refund landed since the read (the split was
computed from the total read: `refund_conflict`, retryable) and a refund beyond
what was charged minus earlier refunds: both in SQL, in the same batch.

Order inside the batch matters: the `reading_refunds` row goes right after the
transfer row and BEFORE the ledger entries. The entries are judged against the
accounts as they are when the batch runs, so with the entries first a refund
whose split was computed from a stale total (a concurrent refund landed) could
take the advisor's earnings below zero and abort on the accounts' CHECK, which
answered the non-retryable `advisor_balance_insufficient` although the same
refund, recomputed, fits. With the row first, the stale read is refused for
what it is; only a refund read against the current total can reach the CHECK,
so `advisor_balance_insufficient` means what it says.
"""

import json
from dataclasses import dataclass
from typing import Any

from . import ledger, promo, users
from .clock import rfc3339
from .db import CheckViolation, TriggerAbort, UniqueViolation, sql
from .errors import Problem, conflict, not_found
from .idempotency import IdempotencyKey, RequestKey
from .ids import new_id
from .requests import RequestContext
from .responses import Reply
from .routing import Route
from .validation import Int, Obj, Str

REFUND_BODY = Obj(
    {
        "amount_cents": Int(low=1, high=ledger.MAX_TRANSFER_CENTS, description="at most charged minus refunded"),
        "reason": Str(min_len=1, max_len=500, description="why (kept with the refund, for audit)"),
    },
    required=("amount_cents", "reason"),
)

# The reading with its totals: charged (all, promo-paid, advisor's, promotions'
# part: the split of promo.minute_split, in SQL) and refunded (all, promo,
# advisor, promotions, platform), one scan of each table.
_SELECT_READING = f"""
SELECT r.id, r.client_id, r.advisor_id, r.rate_cents_per_minute, r.platform_cents_per_minute,
       (SELECT json_array(coalesce(sum(c.amount_cents), 0), coalesce(sum(c.promo_cents), 0),
                          coalesce(sum({promo.CHARGE_ADVISOR_CENTS}), 0), coalesce(sum({promo.CHARGE_PROMOTIONS_CENTS}), 0))
        FROM reading_charges c WHERE c.reading_id = r.id) AS charged,
       (SELECT json_array(coalesce(sum(f.amount_cents), 0), coalesce(sum(f.promo_cents), 0),
                          coalesce(sum(f.advisor_cents), 0), coalesce(sum(f.promotions_cents), 0))
        FROM reading_refunds f WHERE f.reading_id = r.id) AS refunded
FROM readings r WHERE r.id = ?"""  # noqa: S608 - constant text


# The same, read only when the caller (by Clerk sub) is an admin: the users row
# first (CROSS JOIN keeps that order), so for anyone else the reading is not read.
_SELECT_READING_FOR_ADMIN = (
    "SELECT x.* FROM (SELECT id FROM users WHERE clerk_user_id = ? AND is_admin = 1) g CROSS JOIN ("  # noqa: S608 - constant text
    + _SELECT_READING
    + ") x"
)


@dataclass(frozen=True, slots=True)
class Totals:
    """A reading's charges or refunds: all cents, promo cents, the advisor's, platform_promotions'."""

    cents: int
    promo: int
    advisor: int
    promotions: int

    @property
    def revenue(self) -> int:
        return self.cents - self.advisor - self.promotions

    @classmethod
    def parse(cls, raw: str) -> "Totals":
        cents, promo_cents, advisor, promotions = (int(v) for v in json.loads(raw))
        return cls(cents, promo_cents, advisor, promotions)


@dataclass(frozen=True, slots=True)
class Split:
    promo: int  # back to the client's promo credit (the rest to its wallet)
    advisor: int
    revenue: int
    promotions: int


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def split_refund(amount: int, charged: Totals, refunded: Totals) -> Split:
    """Who gets and who gives back `amount`: cumulative proportions, clamped to
    what is left of each part (see the module docstring)."""
    total = refunded.cents + amount
    assert amount > 0 and total <= charged.cents
    wallet_paid, wallet_back = charged.cents - charged.promo, refunded.cents - refunded.promo
    promo_back = _clamp(
        total * charged.promo // charged.cents - refunded.promo,
        max(0, amount - (wallet_paid - wallet_back)),
        min(amount, charged.promo - refunded.promo),
    )
    revenue_left = charged.revenue - refunded.revenue
    promotions_left = charged.promotions - refunded.promotions
    revenue = _clamp(total * charged.revenue // charged.cents - refunded.revenue, 0, revenue_left)
    promotions = _clamp(total * charged.promotions // charged.cents - refunded.promotions, 0, promotions_left)
    advisor = amount - revenue - promotions
    advisor_left = charged.advisor - refunded.advisor
    if advisor > advisor_left:  # the advisor gives back no more than it received: the platform's parts take the rest
        extra = advisor - advisor_left
        more_revenue = min(extra, revenue_left - revenue)
        revenue, promotions = revenue + more_revenue, promotions + extra - more_revenue
        advisor = advisor_left
    elif advisor < 0:
        fewer_revenue = min(-advisor, revenue)
        revenue, promotions = revenue - fewer_revenue, promotions + advisor + fewer_revenue
        advisor = 0
    split = Split(promo_back, advisor, revenue, promotions)
    assert 0 <= split.promotions <= promotions_left and 0 <= split.revenue <= revenue_left, split
    assert 0 <= split.advisor <= advisor_left and split.advisor + split.revenue + split.promotions == amount, split
    return split


# The text of the accounts' CHECK (migration 0002) as D1 reports it:
# "CHECK constraint failed: balance_cents >= 0 OR kind IN (...)".
_BALANCE_CHECK_TEXT = "balance_cents >= 0"


def _is_balance_check(exc: CheckViolation) -> bool:
    return _BALANCE_CHECK_TEXT in exc.message


def _refund_legs(reading: dict[str, Any], amount: int, split: Split) -> list[ledger.Leg]:
    client_id = int(reading["client_id"])
    legs = [
        ledger.Leg(ledger.wallet_of(client_id), amount - split.promo),
        ledger.Leg(ledger.promo_of(client_id), split.promo),
        ledger.Leg(ledger.earnings_of(int(reading["advisor_id"])), -split.advisor),
        ledger.Leg(ledger.PLATFORM_REVENUE, -split.revenue),
        ledger.Leg(ledger.PLATFORM_PROMOTIONS, -split.promotions),
    ]
    return [leg for leg in legs if leg.amount_cents]


async def refund_reading(rc: RequestContext) -> Reply:
    reading_id: int = rc.params["reading_id"]
    # The caller lookup, any stored reply for the key and the reading, in one batch
    # (Route(caller_batch=True)); the role is checked before the body and the key are.
    # The reading is read for an admin only, so a non-admin's 403 reads the same rows
    # whether or not the reading exists (no existence oracle in server-timing).
    sub = users.caller_sub(rc)
    stored, found = await users.with_caller(
        rc,
        [
            RequestKey.peek_stored(rc, sub),
            sql(_SELECT_READING_FOR_ADMIN, sub, reading_id),
        ],
    )
    body = await rc.parsed_body()
    key = await IdempotencyKey.from_request(rc)
    if stored.rows:
        return key.replay_row(stored.rows[0])
    if not found.rows:
        raise not_found("reading")
    reading = found.rows[0]
    amount = body["amount_cents"]
    charged, refunded = Totals.parse(reading["charged"]), Totals.parse(reading["refunded"])
    if amount > charged.cents - refunded.cents:
        raise conflict(
            "refund_exceeds_charges",
            f"This reading was charged {charged.cents} cents and {refunded.cents} are already refunded; "
            f"at most {charged.cents - refunded.cents} can be refunded.",
        )
    split = split_refund(amount, charged, refunded)
    refund_id, transfer_id = new_id(), new_id()
    reply = {
        "refund": {
            "id": str(refund_id),
            "reading_id": str(reading_id),
            "amount_cents": amount,
            "wallet_cents": amount - split.promo,
            "promo_cents": split.promo,
            "advisor_cents": split.advisor,
            "platform_cents": split.revenue + split.promotions,
            "promotions_cents": split.promotions,
            "reason": body["reason"],
            "created_at": rfc3339(key.now_ms),
        },
        "reading_charged_cents": charged.cents,
        "reading_refunded_cents": refunded.cents + amount,
    }
    # Right after the transfer row: the refund row and its triggers (see the
    # module docstring), and the grant of any promo cents given back; then the
    # entries and the posting.
    rows = [
        sql(
            """INSERT INTO reading_refunds (id, reading_id, transfer_id, amount_cents, advisor_cents, platform_cents,
                                            promo_cents, promotions_cents, refunded_before_cents, reason,
                                            requested_by_user_id, created_at_ms)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            refund_id,
            reading_id,
            transfer_id,
            amount,
            split.advisor,
            split.revenue + split.promotions,
            split.promo,
            split.promotions,
            refunded.cents,
            body["reason"],
            key.user_id,
            key.now_ms,
        )
    ]
    if split.promo:
        rows.append(
            promo.grant_row(
                grant_id=new_id(),
                client_id=int(reading["client_id"]),
                source="reading_refund",
                transfer_id=transfer_id,
                amount_cents=split.promo,
                now_ms=key.now_ms,
                expires_at_ms=key.now_ms + rc.settings.promo_refund_credit_days * promo.DAY_MS,
                reading_id=reading_id,
            )
        )
    statements = [
        *ledger.transfer(
            transfer_id=transfer_id,
            key=f"reading:{reading_id}:refund:{refund_id}",
            kind="reading_refund",
            legs=_refund_legs(reading, amount, split),
            now_ms=key.now_ms,
            reference_type="reading",
            reference_id=reading_id,
            requested_by_user_id=key.user_id,
            before_entries=rows,
        ),
        key.record_done(201, reply),
    ]
    try:
        await rc.db.batch(statements)
    except UniqueViolation as exc:
        if IdempotencyKey.is_key_conflict(exc):
            return await key.replay(rc.db)
        raise
    except TriggerAbort as exc:
        if exc.code == "refund_exceeds_charges":
            raise conflict("refund_exceeds_charges", "The refund exceeds what the reading was charged.") from None
        if exc.code == "refund_conflict":
            raise Problem(
                409,
                "refund_conflict",
                "Conflict",
                "Another refund of this reading landed; retry.",
                headers={"retry-after": "1"},
            ) from None
        raise
    except CheckViolation as exc:
        if not _is_balance_check(exc):
            raise
        # The accounts' balance CHECK: the advisor's earnings (or the platform's
        # revenue) may not go below zero, e.g. already paid out. Reached only by a
        # refund computed from the current refunded total (the row above refuses
        # a stale one first), so this is the advisor's real balance, not a race.
        raise conflict(
            "advisor_balance_insufficient", "The advisor's earnings balance cannot cover this refund."
        ) from None
    return Reply(reply, 201)


SCHEMAS: dict[str, Any] = {
    "ReadingRefund": {
        "type": "object",
        "required": ["refund", "reading_charged_cents", "reading_refunded_cents"],
        "properties": {
            "refund": {
                "type": "object",
                "required": [
                    "id",
                    "reading_id",
                    "amount_cents",
                    "wallet_cents",
                    "promo_cents",
                    "advisor_cents",
                    "platform_cents",
                    "promotions_cents",
                    "reason",
                    "created_at",
                ],
                "properties": {
                    "id": {"type": "string"},
                    "reading_id": {"type": "string"},
                    "amount_cents": {"type": "integer"},
                    "wallet_cents": {"type": "integer", "description": "back to the client's wallet"},
                    "promo_cents": {
                        "type": "integer",
                        "description": "back to the client's promo credit (what promo credit paid)",
                    },
                    "advisor_cents": {"type": "integer"},
                    "platform_cents": {"type": "integer", "description": "from platform revenue and promotions"},
                    "promotions_cents": {
                        "type": "integer",
                        "description": "of platform_cents, from the promotions account",
                    },
                    "reason": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"},
                },
            },
            "reading_charged_cents": {"type": "integer"},
            "reading_refunded_cents": {"type": "integer"},
        },
    },
}

ROUTES = [
    Route(
        "POST",
        "/v1/admin/readings/{reading_id:id}/refund",
        refund_reading,
        "Refund some or all of a reading's charges (advisor and platform give back their shares)",
        auth="admin",
        primary=True,
        caller_batch=True,
        body=REFUND_BODY,
        idempotency_key=True,
        responses={201: "ReadingRefund"},
        problems=(409, 422),
        tag="admin",
    ),
]
