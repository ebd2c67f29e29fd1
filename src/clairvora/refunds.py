"""Admin refunds of a reading's charges: `POST /v1/admin/readings/{id}/refund`.

A refund is one `reading_refund` transfer back to the client's wallet, taken
from the advisor's earnings and the platform's revenue in the proportion the
reading was charged (its rate split is fixed on the reading row). The split
is cumulative: after refunds totalling R, the platform has given back exactly
floor(R * platform_part / rate), so partial refunds never take more from
either side than it earned and a full refund returns each side's exact share.

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

from typing import Any

from . import ledger, users
from .clock import rfc3339
from .db import CheckViolation, TriggerAbort, UniqueViolation, sql
from .errors import Problem, conflict, not_found
from .idempotency import STORED_BY_SUB, IdempotencyKey, RequestKey
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

_SELECT_READING = """
SELECT r.id, r.client_id, r.advisor_id, r.rate_cents_per_minute, r.platform_cents_per_minute,
       (SELECT coalesce(sum(amount_cents), 0) FROM reading_charges WHERE reading_id = r.id) AS charged_cents,
       (SELECT coalesce(sum(amount_cents), 0) FROM reading_refunds WHERE reading_id = r.id) AS refunded_cents
FROM readings r WHERE r.id = ?"""


# The same, read only when the caller (by Clerk sub) is an admin: the users row
# first (CROSS JOIN keeps that order), so for anyone else the reading is not read.
_SELECT_READING_FOR_ADMIN = (
    "SELECT x.* FROM (SELECT id FROM users WHERE clerk_user_id = ? AND is_admin = 1) g CROSS JOIN ("  # noqa: S608 - constant text
    + _SELECT_READING
    + ") x"
)


def split_refund(amount: int, refunded_before: int, rate: int, platform_per_minute: int) -> tuple[int, int]:
    """(advisor_cents, platform_cents) of a refund, cumulative so rounding never drifts."""
    assert amount > 0 and refunded_before >= 0 and 0 <= platform_per_minute <= rate
    platform = (refunded_before + amount) * platform_per_minute // rate - refunded_before * platform_per_minute // rate
    advisor = amount - platform
    assert advisor >= 0 and platform >= 0 and advisor + platform == amount
    return advisor, platform


# The text of the accounts' CHECK (migration 0002) as D1 reports it:
# "CHECK constraint failed: balance_cents >= 0 OR kind IN (...)".
_BALANCE_CHECK_TEXT = "balance_cents >= 0"


def _is_balance_check(exc: CheckViolation) -> bool:
    return _BALANCE_CHECK_TEXT in exc.message


def _refund_legs(reading: dict[str, Any], amount: int, advisor: int, platform: int) -> list[ledger.Leg]:
    legs = [ledger.Leg(ledger.wallet_of(int(reading["client_id"])), amount)]
    if advisor:
        legs.append(ledger.Leg(ledger.earnings_of(int(reading["advisor_id"])), -advisor))
    if platform:
        legs.append(ledger.Leg(ledger.PLATFORM_REVENUE, -platform))
    return legs


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
            sql(STORED_BY_SUB, sub, RequestKey.peek(rc) or ""),
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
    charged, refunded = int(reading["charged_cents"]), int(reading["refunded_cents"])
    if amount > charged - refunded:
        raise conflict(
            "refund_exceeds_charges",
            f"This reading was charged {charged} cents and {refunded} are already refunded; "
            f"at most {charged - refunded} can be refunded.",
        )
    advisor, platform = split_refund(
        amount, refunded, int(reading["rate_cents_per_minute"]), int(reading["platform_cents_per_minute"])
    )
    refund_id, transfer_id = new_id(), new_id()
    reply = {
        "refund": {
            "id": str(refund_id),
            "reading_id": str(reading_id),
            "amount_cents": amount,
            "advisor_cents": advisor,
            "platform_cents": platform,
            "reason": body["reason"],
            "created_at": rfc3339(key.now_ms),
        },
        "reading_charged_cents": charged,
        "reading_refunded_cents": refunded + amount,
    }
    transfer = ledger.transfer(
        transfer_id=transfer_id,
        key=f"reading:{reading_id}:refund:{refund_id}",
        kind="reading_refund",
        legs=_refund_legs(reading, amount, advisor, platform),
        now_ms=key.now_ms,
        reference_type="reading",
        reference_id=reading_id,
        requested_by_user_id=key.user_id,
    )
    # The transfer row first (the refund row references it), then the refund row
    # and its triggers, then the entries and the posting (see the module docstring).
    transfer_row, entries_and_post = transfer[0], transfer[1:]
    assert transfer_row.sql.lstrip().startswith("INSERT INTO transfers"), transfer_row.sql
    statements = [
        transfer_row,
        sql(
            """INSERT INTO reading_refunds (id, reading_id, transfer_id, amount_cents, advisor_cents, platform_cents,
                                            refunded_before_cents, reason, requested_by_user_id, created_at_ms)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            refund_id,
            reading_id,
            transfer_id,
            amount,
            advisor,
            platform,
            refunded,
            body["reason"],
            key.user_id,
            key.now_ms,
        ),
        *entries_and_post,
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
                    "advisor_cents",
                    "platform_cents",
                    "reason",
                    "created_at",
                ],
                "properties": {
                    "id": {"type": "string"},
                    "reading_id": {"type": "string"},
                    "amount_cents": {"type": "integer"},
                    "advisor_cents": {"type": "integer"},
                    "platform_cents": {"type": "integer"},
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
