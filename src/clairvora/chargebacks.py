"""Chargebacks: `POST /v1/admin/payments/{id}/chargebacks` records one against
a card deposit, `POST /v1/admin/chargebacks/{id}/resolve` closes it.

Authorize.Net does not report chargebacks through its webhooks (the processor
notifies the merchant, and they appear in the Merchant Interface), so an admin
records each one. Recording it is ONE batch (migration 0092 holds the rules):
- the `chargebacks` row (open) and the deposit's `charged_back_cents` (with
  what was reversed and refunded never more than the deposit: payments CHECK);
- a `chargeback` transfer, client wallet -> gateway clearing, the amount the
  card network took back. It may take the wallet below zero (0090's trigger
  allows this kind): the money was spent on readings already;
- the advisor side, per CHARGEBACK_ADVISOR_SIDE at that moment: `platform`
  (the platform bears the loss; the negative wallet is what the client owes)
  or `clawback`: of the spent part (the amount beyond what the wallet held),
  each advisor of the client's readings since the deposit gives back its
  proportional share, at most its pending earnings, for the
  MAX_CLAWBACK_ADVISORS largest shares (docs/PAYMENTS.md): one `clawback`
  transfer, advisors' pending earnings -> the client's wallet;
- the key's stored reply.
While one is open its client can start no reading, deposit or refund (triggers
on those INSERTs: 403 `chargeback_hold`). Resolving it, one batch, lifts the
hold: `lost` (the money stays gone) or `won` (a `chargeback_reversal`, gateway
clearing -> wallet, and each clawed-back advisor gets its share back).
Each route is 2 D1 calls: its reads with the admin lookup, then its one batch.
"""

from typing import Any

from . import ledger, users
from .clock import rfc3339
from .db import CheckViolation, TriggerAbort, UniqueViolation, sql
from .errors import Problem, conflict, not_found
from .idempotency import IdempotencyKey, RequestKey
from .ids import new_id
from .requests import RequestContext
from .responses import Reply
from .routing import Route
from .validation import Int, Obj, Str

MAX_CLAWBACK_ADVISORS = 6  # the reversal's legs: clearing + wallet + 6 advisors = ledger.MAX_LEGS
RECENT_ENTRIES = 1000  # how far back the client's wallet entries are read for the clawback

RECORD_BODY = Obj(
    {
        "amount_cents": Int(
            low=1, high=ledger.MAX_TRANSFER_CENTS, description="default: all that is left of the deposit"
        ),
        "reason_code": Str(min_len=1, max_len=16, description="the card network's reason code, e.g. 10.4"),
        "note": Str(min_len=1, max_len=500, description="what the processor reported (kept for audit)"),
    },
    required=("note",),
)
RESOLVE_BODY = Obj(
    {
        "outcome": Str(min_len=1, max_len=8, choices=("won", "lost"), description="won: the money came back"),
        "note": Str(min_len=1, max_len=500),
    },
    required=("outcome", "note"),
)

# Read with the caller lookup (Route(caller_batch=True)) for an admin only: `users g`
# (the caller by Clerk sub, an admin) is every read's outer loop (CROSS JOIN keeps it
# there), so a non-admin's 403 reads the same rows whether the object exists or not.
_PAYMENT = """SELECT p.id, p.user_id, p.status, p.created_at_ms,
       p.amount_cents - p.reversed_cents - p.refunded_cents - p.charged_back_cents AS left_cents,
       (SELECT balance_cents FROM accounts WHERE owner_user_id = p.user_id AND kind = 'client_wallet') AS wallet_cents
FROM users g CROSS JOIN payments p WHERE g.clerk_user_id = ? AND g.is_admin = 1 AND p.id = ?"""
# Per advisor: what the client's wallet paid for its readings since the deposit
# (charges less refunds) and the advisor's share of that, and its pending earnings.
# The client's newest RECENT_ENTRIES wallet entries drive the join (CROSS JOIN
# keeps SQLite from starting at every reading transfer instead). Sent under
# `clawback` only; it reads entries only if some of the deposit may be spent
# (what is left of it exceeds the wallet): else (or for a non-admin) the
# wallet's id is NULL and the entries' index seek finds nothing.
_SHARES = """
SELECT r.advisor_id AS advisor_id, -sum(e.amount_cents) AS paid_cents,
       -sum(e.amount_cents * r.advisor_cents_per_minute / r.rate_cents_per_minute) AS advisor_cents,
       (SELECT balance_cents FROM accounts WHERE owner_user_id = r.advisor_id AND kind = 'advisor_earnings')
         AS pending_cents
FROM (SELECT transfer_id, amount_cents, created_at_ms FROM ledger_entries
      WHERE account_id = (
        SELECT a.id FROM users g CROSS JOIN payments p CROSS JOIN accounts a
        WHERE g.clerk_user_id = ? AND g.is_admin = 1 AND p.id = ? AND p.status = 'approved'
          AND a.owner_user_id = p.user_id AND a.kind = 'client_wallet'
          AND p.amount_cents - p.reversed_cents - p.refunded_cents - p.charged_back_cents > max(a.balance_cents, 0))
      ORDER BY sequence DESC LIMIT ?) e
CROSS JOIN transfers t ON t.id = e.transfer_id
CROSS JOIN readings r ON r.id = t.reference_id
WHERE e.created_at_ms >= (SELECT created_at_ms FROM payments WHERE id = ?)
  AND t.kind IN ('reading_charge', 'reading_refund') AND t.reference_type = 'reading'
GROUP BY r.advisor_id"""
_CHARGEBACK = (
    "SELECT c.* FROM users g CROSS JOIN chargebacks c WHERE g.clerk_user_id = ? AND g.is_admin = 1 AND c.id = ?"
)
_CLAWED = """SELECT a.owner_user_id AS advisor_id, -e.amount_cents AS amount_cents
FROM users g CROSS JOIN transfers t CROSS JOIN ledger_entries e CROSS JOIN accounts a
WHERE g.clerk_user_id = ? AND g.is_admin = 1 AND t.transfer_key = ? AND e.transfer_id = t.id AND a.id = e.account_id
  AND a.kind = 'advisor_earnings' ORDER BY a.owner_user_id"""


def hold_problem() -> Problem:
    return Problem(
        403,
        "chargeback_hold",
        "Account on hold",
        "A card payment of yours is disputed (a chargeback): new readings, deposits and refunds are paused until "
        "it is resolved.",
    )


def clawback_shares(spent: int, shares: list[dict[str, Any]]) -> dict[int, int]:
    """advisor id -> cents taken back (pure): each advisor's share of `spent`
    (at most what the wallet paid its readings), capped by its pending earnings."""
    paid = sum(max(0, int(s["paid_cents"])) for s in shares)
    base = min(spent, paid)
    if base <= 0:
        return {}
    ranked = sorted(
        (s for s in shares if int(s["advisor_cents"]) > 0), key=lambda s: (-int(s["advisor_cents"]), s["advisor_id"])
    )
    out = {}
    for s in ranked[:MAX_CLAWBACK_ADVISORS]:
        cents = min(int(s["advisor_cents"]) * base // paid, max(0, int(s["pending_cents"] or 0)))
        if cents > 0:
            out[int(s["advisor_id"])] = cents
    return out


def chargeback_view(row: dict[str, Any], clawbacks: dict[int, int]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "deposit_id": str(row["payment_id"]),
        "client_id": str(row["user_id"]),
        "amount_cents": int(row["amount_cents"]),
        "reason_code": row["reason_code"],
        "note": row["note"],
        "advisor_side": row["advisor_side"],
        "clawback_cents": int(row["clawback_cents"]),
        "clawbacks": [{"advisor_id": str(a), "amount_cents": c} for a, c in sorted(clawbacks.items())],
        "state": row["state"],
        "created_at": rfc3339(row["created_at_ms"]),
        "resolved_at": rfc3339(row["resolved_at_ms"]) if row.get("resolved_at_ms") is not None else None,
        "resolution_note": row.get("resolution_note"),
    }


async def record_chargeback(rc: RequestContext) -> Reply:
    payment_id: int = rc.params["payment_id"]
    side = rc.settings.chargeback_advisor_side
    # The admin lookup, any stored reply for the key, the deposit and (clawback)
    # the advisors' shares, in one batch; the role is checked before the body and
    # the key are (users.with_caller).
    sub = users.caller_sub(rc)
    reads = [RequestKey.peek_stored(rc, sub), sql(_PAYMENT, sub, payment_id)]
    if side == "clawback":
        reads.append(sql(_SHARES, sub, payment_id, RECENT_ENTRIES, payment_id))
    stored, found, *shares = await users.with_caller(rc, reads)
    body = await rc.parsed_body()
    key = await IdempotencyKey.from_request(rc)
    if stored.rows:
        return key.replay_row(stored.rows[0])
    if not found.rows:
        raise not_found("deposit")
    payment = found.rows[0]
    left = int(payment["left_cents"])
    if payment["status"] != "approved" or left <= 0:
        raise conflict("chargeback_not_possible", "Only an approved deposit with money left on it can be charged back.")
    amount = body.get("amount_cents", left)
    if amount > left:
        raise Problem(
            409,
            "chargeback_exceeds_deposit",
            "Conflict",
            f"At most {left} cents of this deposit are left to charge back.",
            extra={"left_cents": left},
        )
    client_id = int(payment["user_id"])
    spent = amount - max(0, int(payment["wallet_cents"] or 0))
    clawbacks: dict[int, int] = {}
    if shares and spent > 0:
        clawbacks = clawback_shares(spent, shares[0].rows)
    clawed = sum(clawbacks.values())
    row = {
        "id": new_id(),
        "payment_id": payment_id,
        "user_id": client_id,
        "amount_cents": amount,
        "reason_code": body.get("reason_code"),
        "note": body["note"],
        "advisor_side": side,
        "clawback_cents": clawed,
        "state": "open",
        "created_at_ms": key.now_ms,
    }
    reply = {"chargeback": chargeback_view(row, clawbacks)}
    statements = [
        sql(
            """INSERT INTO chargebacks (id, payment_id, user_id, amount_cents, reason_code, note, advisor_side,
                                        clawback_cents, state, recorded_by_user_id, created_at_ms)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?)""",
            row["id"],
            payment_id,
            client_id,
            amount,
            row["reason_code"],
            row["note"],
            side,
            clawed,
            key.user_id,
            key.now_ms,
        ),
        sql(
            "UPDATE payments SET charged_back_cents = charged_back_cents + ?, updated_at_ms = ? WHERE id = ?",
            amount,
            key.now_ms,
            payment_id,
        ),
        *ledger.transfer(
            transfer_id=new_id(),
            key=f"chargeback:{row['id']}",
            kind="chargeback",
            legs=[ledger.Leg(ledger.wallet_of(client_id), -amount), ledger.Leg(ledger.GATEWAY_CLEARING, amount)],
            now_ms=key.now_ms,
            reference_type="chargeback",
            reference_id=row["id"],
            requested_by_user_id=key.user_id,
        ),
    ]
    if clawbacks:
        legs = [ledger.Leg(ledger.earnings_of(a), -c) for a, c in sorted(clawbacks.items())]
        statements += ledger.transfer(
            transfer_id=new_id(),
            key=f"chargeback:{row['id']}:clawback",
            kind="clawback",
            legs=[*legs, ledger.Leg(ledger.wallet_of(client_id), clawed)],
            now_ms=key.now_ms,
            reference_type="chargeback",
            reference_id=row["id"],
            requested_by_user_id=key.user_id,
        )
    statements.append(key.record_done(201, reply))
    try:
        await rc.db.batch(statements)
    except UniqueViolation as exc:
        if IdempotencyKey.is_key_conflict(exc):
            return await key.replay(rc.db)
        raise
    except TriggerAbort as exc:
        if exc.code != "chargeback_payment_invalid":
            raise
        raise conflict("chargeback_not_possible", "The deposit is no longer approved.") from None
    except CheckViolation as exc:
        # The deposit's totals or an advisor's pending earnings moved since the read.
        raise Problem(
            409,
            "chargeback_conflict",
            "Conflict",
            "The deposit or an advisor's earnings changed meanwhile; nothing was recorded. Retry.",
            headers={"retry-after": "1"},
        ) from exc
    return Reply(reply, 201)


async def resolve_chargeback(rc: RequestContext) -> Reply:
    chargeback_id: int = rc.params["chargeback_id"]
    sub = users.caller_sub(rc)
    stored, found, clawed = await users.with_caller(
        rc,
        [
            RequestKey.peek_stored(rc, sub),
            sql(_CHARGEBACK, sub, chargeback_id),
            sql(_CLAWED, sub, f"chargeback:{chargeback_id}:clawback"),
        ],
    )
    body = await rc.parsed_body()
    key = await IdempotencyKey.from_request(rc)
    if stored.rows:
        return key.replay_row(stored.rows[0])
    if not found.rows:
        raise not_found("chargeback")
    row = dict(found.rows[0])
    if row["state"] != "open":
        raise conflict("chargeback_not_open", f"This chargeback is already resolved ({row['state']}).")
    clawbacks = {int(c["advisor_id"]): int(c["amount_cents"]) for c in clawed.rows}
    outcome, amount, client_id = body["outcome"], int(row["amount_cents"]), int(row["user_id"])
    row.update(state=outcome, resolved_at_ms=key.now_ms, resolution_note=body["note"])
    reply = {"chargeback": chargeback_view(row, clawbacks)}
    # No `state = 'open'` condition: a resolved row must reach the trigger, which
    # aborts the batch (chargeback_not_open) instead of matching nothing.
    statements = [
        sql(
            """UPDATE chargebacks SET state = ?, resolved_by_user_id = ?, resolution_note = ?, resolved_at_ms = ?
               WHERE id = ?""",
            outcome,
            key.user_id,
            body["note"],
            key.now_ms,
            chargeback_id,
        )
    ]
    if outcome == "won":
        back = amount - int(row["clawback_cents"])
        legs = [ledger.Leg(ledger.GATEWAY_CLEARING, -amount)]
        legs += [ledger.Leg(ledger.wallet_of(client_id), back)] if back else []
        legs += [ledger.Leg(ledger.earnings_of(a), c) for a, c in sorted(clawbacks.items())]
        statements += [
            sql(
                "UPDATE payments SET charged_back_cents = charged_back_cents - ?, updated_at_ms = ? WHERE id = ?",
                amount,
                key.now_ms,
                int(row["payment_id"]),
            ),
            *ledger.transfer(
                transfer_id=new_id(),
                key=f"chargeback:{chargeback_id}:reversal",
                kind="chargeback_reversal",
                legs=legs,
                now_ms=key.now_ms,
                reference_type="chargeback",
                reference_id=chargeback_id,
                requested_by_user_id=key.user_id,
            ),
        ]
    statements.append(key.record_done(200, reply))
    try:
        await rc.db.batch(statements)
    except UniqueViolation as exc:
        if IdempotencyKey.is_key_conflict(exc):
            return await key.replay(rc.db)
        raise
    except TriggerAbort as exc:
        if exc.code != "chargeback_not_open":
            raise
        raise conflict("chargeback_not_open", "This chargeback was resolved meanwhile.") from None
    return Reply(reply, 200)


_CHARGEBACK_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string"},
    "deposit_id": {"type": "string"},
    "client_id": {"type": "string"},
    "amount_cents": {"type": "integer", "minimum": 1},
    "reason_code": {"type": ["string", "null"]},
    "note": {"type": "string"},
    "advisor_side": {"type": "string", "enum": ["platform", "clawback"]},
    "clawback_cents": {"type": "integer", "minimum": 0},
    "clawbacks": {
        "type": "array",
        "maxItems": MAX_CLAWBACK_ADVISORS,
        "items": {
            "type": "object",
            "required": ["advisor_id", "amount_cents"],
            "properties": {"advisor_id": {"type": "string"}, "amount_cents": {"type": "integer", "minimum": 1}},
        },
    },
    "state": {"type": "string", "enum": ["open", "won", "lost"]},
    "created_at": {"type": "string", "format": "date-time"},
    "resolved_at": {"type": ["string", "null"], "format": "date-time"},
    "resolution_note": {"type": ["string", "null"]},
}
_CHARGEBACK_SCHEMA = {"type": "object", "required": list(_CHARGEBACK_PROPERTIES), "properties": _CHARGEBACK_PROPERTIES}

SCHEMAS: dict[str, Any] = {
    "ChargebackResult": {
        "type": "object",
        "required": ["chargeback"],
        "properties": {"chargeback": _CHARGEBACK_SCHEMA},
    },
}

ROUTES = [
    Route(
        "POST",
        "/v1/admin/payments/{payment_id:id}/chargebacks",
        record_chargeback,
        "Record a chargeback against a card deposit (the client is on hold until it is resolved)",
        auth="admin",
        primary=True,
        caller_batch=True,
        body=RECORD_BODY,
        idempotency_key=True,
        responses={201: "ChargebackResult"},
        problems=(404, 409, 422),
        problem_codes={
            409: ("chargeback_not_possible", "chargeback_exceeds_deposit", "chargeback_conflict"),
            422: ("idempotency_key_reused",),
        },
        tag="admin",
    ),
    Route(
        "POST",
        "/v1/admin/chargebacks/{chargeback_id:id}/resolve",
        resolve_chargeback,
        "Close a chargeback: won (the money returns, clawbacks are given back) or lost",
        auth="admin",
        primary=True,
        caller_batch=True,
        body=RESOLVE_BODY,
        idempotency_key=True,
        responses={200: "ChargebackResult"},
        problems=(404, 409, 422),
        problem_codes={409: ("chargeback_not_open",), 422: ("idempotency_key_reused",)},
        tag="admin",
    ),
]
