"""Satisfaction credit: a client unhappy with a reading gets promo credit.

- The client claims (`POST /v1/readings/{id}/satisfaction-claim`) within
  SATISFACTION_WINDOW_SECONDS after the reading ended. The credit is what the
  reading really cost the client (wallet-paid cents, less wallet cents refunded),
  at most SATISFACTION_MAX_CENTS, and a client makes at most
  SATISFACTION_CLAIMS_PER_PERIOD claims per SATISFACTION_PERIOD_DAYS.
- An admin grants it (`POST /v1/admin/readings/{id}/satisfaction-credit`): any
  amount up to what the reading really cost, no window, no period limit.
One satisfaction credit per reading, whoever asks (UNIQUE reading_id).

Paid as promo credit (a satisfaction_credit transfer from platform_promotions,
valid SATISFACTION_CREDIT_DAYS): spendable on readings, never cash. With
SATISFACTION_CLAWBACK=on the same batch also takes a `clawback` transfer from
the advisor's pending earnings to platform_promotions: at most what the
advisor earned on this reading (net of refunds) and at most what the pending
earnings hold now (they never go below zero); whatever the clawback cannot
take, the platform bears. With it off the platform bears all of it.

Every rule is judged again by the claim row's trigger in the batch (migration
0091), with the policy in force stored on the row. Refusals (409):
reading_not_claimable (not the caller's ended reading, or nothing paid),
claim_already_made, claim_window_closed, claim_limit_reached,
claim_exceeds_paid (an admin amount above what was paid).
"""

from typing import Any

from . import ledger, promo, users
from .clock import rfc3339
from .db import CheckViolation, Result, Statement, TriggerAbort, UniqueViolation, sql
from .errors import Problem, conflict, forbidden, not_found
from .idempotency import IdempotencyKey, RequestKey
from .ids import new_id
from .requests import RequestContext
from .responses import Reply
from .routing import Route
from .validation import Int, Obj, Str

CLAIM_BODY = Obj(
    {"reason": Str(min_len=1, max_len=500, description="What went wrong (kept with the claim).")},
    required=("reason",),
)
GRANT_BODY = Obj(
    {
        "amount_cents": Int(low=1, high=100_000, description="At most what the reading really cost the client."),
        "reason": Str(min_len=1, max_len=500, description="Why (kept with the credit, for audit)."),
    },
    required=("amount_cents", "reason"),
)

# The reading, what the client really paid for it, what its advisor earned on
# it and holds now, and the claims that limit a new one; the stored answer.
_READ = f"""
SELECT r.id, r.client_id, r.advisor_id, r.status, r.ended_at_ms,
  (SELECT coalesce(sum(amount_cents - promo_cents), 0) FROM reading_charges WHERE reading_id = r.id)
  - (SELECT coalesce(sum(amount_cents - promo_cents), 0) FROM reading_refunds WHERE reading_id = r.id) AS paid_cents,
  (SELECT coalesce(sum({promo.CHARGE_ADVISOR_CENTS}), 0) FROM reading_charges c WHERE c.reading_id = r.id)
  - (SELECT coalesce(sum(advisor_cents), 0) FROM reading_refunds WHERE reading_id = r.id) AS advisor_earned_cents,
  (SELECT balance_cents FROM accounts WHERE owner_user_id = r.advisor_id AND kind = 'advisor_earnings')
    AS advisor_pending_cents,
  EXISTS (SELECT 1 FROM satisfaction_claims WHERE reading_id = r.id) AS claimed,
  (SELECT count(*) FROM satisfaction_claims
   WHERE client_id = r.client_id AND origin = 'client' AND created_at_ms > ?) AS recent_claims
FROM readings r WHERE r.id = ?"""  # noqa: S608 - constant text
_FOR_PARTICIPANT = _READ + " AND (r.client_id = ? OR r.advisor_id = ?)"
_STORED = """SELECT route, request_sha256, state, response_status, response_body
             FROM idempotency_keys WHERE user_id = ? AND idempotency_key = ?"""
# The first read goes with the caller lookup (Route(caller_batch=True)), so it names
# the caller by Clerk sub: a participant's reading; for an admin, the reading read
# only when the caller is one (the users row first, CROSS JOIN keeps that order), so
# a non-admin's 403 reads the same rows whether the reading exists or not.
_FOR_PARTICIPANT_SUB = (
    _READ + " AND (SELECT id FROM users WHERE clerk_user_id = ?) IN (r.client_id, r.advisor_id)"  # noqa: S608
)
_FOR_ADMIN_SUB = (
    "SELECT x.* FROM (SELECT id FROM users WHERE clerk_user_id = ? AND is_admin = 1) g CROSS JOIN ("  # noqa: S608 - constant text
    + _READ
    + ") x"
)

_REFUSALS = {
    "reading_not_claimable": "Only an ended reading you paid for can earn a satisfaction credit.",
    "claim_window_closed": "The time to claim for this reading is over.",
    "claim_limit_reached": "You have made as many satisfaction claims as this period allows.",
    "claim_exceeds_paid": "The credit exceeds what the reading cost the client.",
}
MAX_ATTEMPTS = 3


def _refused(code: str) -> Problem:
    return conflict(code, _REFUSALS[code])


def claim_view(claim: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(claim["id"]),
        "reading_id": str(claim["reading_id"]),
        "origin": claim["origin"],
        "amount_cents": claim["amount_cents"],
        "clawback_cents": claim["clawback_cents"],
        "platform_cents": claim["amount_cents"] - claim["clawback_cents"],
        "reason": claim["reason"],
        "credit_expires_at": rfc3339(claim["credit_expires_at_ms"]),
        "created_at": rfc3339(claim["created_at_ms"]),
    }


def _statements(
    rc: RequestContext, key: IdempotencyKey, reading: dict[str, Any], origin: str, amount: int, reason: str
) -> tuple[dict[str, Any], list[Statement]]:
    settings, now_ms = rc.settings, key.now_ms
    claim_id, client_id, advisor_id = new_id(), int(reading["client_id"]), int(reading["advisor_id"])
    clawback = 0
    if settings.satisfaction_clawback:
        earned = max(0, int(reading["advisor_earned_cents"]))
        clawback = max(0, min(amount, earned, int(reading["advisor_pending_cents"] or 0)))
    policy: tuple[int | None, ...] = (None, None, None, None)
    if origin == "client":
        policy = (
            settings.satisfaction_window_s,
            settings.satisfaction_max_cents,
            settings.satisfaction_period_days,
            settings.satisfaction_claims_per_period,
        )
    expires_at_ms = now_ms + settings.satisfaction_credit_days * promo.DAY_MS
    claim = {
        "id": claim_id,
        "reading_id": int(reading["id"]),
        "origin": origin,
        "amount_cents": amount,
        "clawback_cents": clawback,
        "reason": reason,
        "credit_expires_at_ms": expires_at_ms,
        "created_at_ms": now_ms,
    }
    statements = [
        # The trigger judges the claim again (reading, window, period, amount).
        sql(
            """INSERT INTO satisfaction_claims (id, reading_id, client_id, advisor_id, origin, amount_cents,
                 clawback_cents, reason, window_seconds, max_cents, period_days, claims_per_period,
                 requested_by_user_id, created_at_ms)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            claim_id,
            reading["id"],
            client_id,
            advisor_id,
            origin,
            amount,
            clawback,
            reason,
            *policy,
            key.user_id,
            now_ms,
        ),
        *promo.grant_statements(
            client_id=client_id,
            amount_cents=amount,
            now_ms=now_ms,
            expires_at_ms=expires_at_ms,
            source="satisfaction",
            kind="satisfaction_credit",
            requested_by_user_id=key.user_id,
            claim_id=claim_id,
            reading_id=int(reading["id"]),
        ).statements,
    ]
    if clawback:
        statements += ledger.transfer(
            transfer_id=new_id(),
            key=f"satisfaction:{claim_id}:clawback",
            kind="clawback",
            legs=[
                ledger.Leg(ledger.earnings_of(advisor_id), -clawback),
                ledger.Leg(ledger.PLATFORM_PROMOTIONS, clawback),
            ],
            now_ms=now_ms,
            reference_type="satisfaction_claim",
            reference_id=claim_id,
            requested_by_user_id=key.user_id,
        )
    return claim, statements


def _since_ms(rc: RequestContext, now_ms: int) -> int:
    """Claims made after this count against the period limit."""
    return now_ms - rc.settings.satisfaction_period_days * promo.DAY_MS


async def _credit(
    rc: RequestContext, key: IdempotencyKey, first: list[Result], origin: str, amount_cents: int | None, reason: str
) -> Reply:
    """`first`: the stored key and the reading, read with the caller lookup; a
    retry (the clawback's CHECK refused a stale read) reads them again."""
    reading_id, now_ms = rc.params["reading_id"], key.now_ms
    for attempt in range(MAX_ATTEMPTS):
        if attempt:
            read = (
                sql(_FOR_PARTICIPANT, _since_ms(rc, now_ms), reading_id, rc.user_id, rc.user_id)
                if origin == "client"
                else sql(_READ, _since_ms(rc, now_ms), reading_id)
            )
            first = await rc.db.batch([sql(_STORED, key.user_id, key.key), read])
        stored, found = first
        if stored.rows:
            return key.replay_row(stored.rows[0])
        if not found.rows:
            raise not_found("reading")
        reading = found.rows[0]
        if origin == "client" and int(reading["client_id"]) != rc.user_id:
            raise forbidden("Only the reading's client may claim a satisfaction credit.")
        paid = int(reading["paid_cents"])
        if reading["status"] != "ended" or paid <= 0:
            raise _refused("reading_not_claimable")
        if reading["claimed"]:
            raise conflict("claim_already_made", "This reading already has a satisfaction credit.")
        if origin == "client":
            if now_ms > int(reading["ended_at_ms"]) + rc.settings.satisfaction_window_s * 1000:
                raise _refused("claim_window_closed")
            if int(reading["recent_claims"]) >= rc.settings.satisfaction_claims_per_period:
                raise _refused("claim_limit_reached")
            amount = min(paid, rc.settings.satisfaction_max_cents)
        else:
            assert amount_cents is not None
            if amount_cents > paid:
                raise _refused("claim_exceeds_paid")
            amount = amount_cents
        claim, statements = _statements(rc, key, reading, origin, amount, reason)
        reply = {"claim": claim_view(claim)}
        try:
            await rc.db.batch([*statements, key.record_done(201, reply)])
        except TriggerAbort as exc:
            if exc.code in _REFUSALS:
                raise _refused(exc.code) from None
            raise
        except UniqueViolation as exc:
            if IdempotencyKey.is_key_conflict(exc):
                return await key.replay(rc.db)
            if "satisfaction_claims.reading_id" in exc.columns:
                raise conflict("claim_already_made", "This reading already has a satisfaction credit.") from None
            raise
        except CheckViolation:
            # The advisor's pending earnings fell below the clawback since the read: take what is there now.
            continue
        return Reply(reply, 201)
    raise Problem(503, "temporarily_unavailable", "Temporarily unavailable", "Retry.", headers={"retry-after": "1"})


async def claim(rc: RequestContext) -> Reply:
    body = await rc.parsed_body()
    requested = await RequestKey.from_request(rc)
    sub, since_ms = users.caller_sub(rc), _since_ms(rc, requested.now_ms)
    first = await users.with_caller(
        rc,
        [requested.stored(sub), sql(_FOR_PARTICIPANT_SUB, since_ms, rc.params["reading_id"], sub)],
    )
    return await _credit(rc, requested.for_user(rc.user_id), first, "client", None, body["reason"])


async def admin_grant(rc: RequestContext) -> Reply:
    # The role is checked (with_caller) before the body and the key are, as on every admin route.
    sub, now_ms = users.caller_sub(rc), rc.clock.now_ms()
    first = await users.with_caller(
        rc,
        [
            RequestKey.peek_stored(rc, sub),
            sql(_FOR_ADMIN_SUB, sub, _since_ms(rc, now_ms), rc.params["reading_id"]),
        ],
    )
    body = await rc.parsed_body()
    key = await IdempotencyKey.from_request(rc)
    return await _credit(rc, key, first, "admin", body["amount_cents"], body["reason"])


_CLAIM_PROPS: dict[str, Any] = {
    "id": {"type": "string"},
    "reading_id": {"type": "string"},
    "origin": {"type": "string", "enum": ["client", "admin"]},
    "amount_cents": {"type": "integer", "description": "Promo credit granted."},
    "clawback_cents": {"type": "integer", "description": "Taken back from the advisor's pending earnings."},
    "platform_cents": {"type": "integer", "description": "Borne by the platform (amount - clawback)."},
    "reason": {"type": "string"},
    "credit_expires_at": {"type": "string", "format": "date-time"},
    "created_at": {"type": "string", "format": "date-time"},
}

SCHEMAS: dict[str, Any] = {
    "SatisfactionCredit": {
        "type": "object",
        "required": ["claim"],
        "properties": {"claim": {"type": "object", "required": list(_CLAIM_PROPS), "properties": _CLAIM_PROPS}},
    },
}

_CODES = ("reading_not_claimable", "claim_already_made", "claim_window_closed", "claim_limit_reached")

ROUTES = [
    Route(
        "POST",
        "/v1/readings/{reading_id:id}/satisfaction-claim",
        claim,
        "Client: claim a satisfaction credit (promo credit) for an ended reading, within the claim window",
        primary=True,
        body=CLAIM_BODY,
        idempotency_key=True,
        responses={201: "SatisfactionCredit"},
        problems=(403, 409, 422),
        problem_codes={409: _CODES, 422: ("idempotency_key_reused",)},
        caller_batch=True,
        tag="readings",
    ),
    Route(
        "POST",
        "/v1/admin/readings/{reading_id:id}/satisfaction-credit",
        admin_grant,
        "Grant a satisfaction credit (promo credit) for an ended reading",
        auth="admin",
        primary=True,
        body=GRANT_BODY,
        idempotency_key=True,
        responses={201: "SatisfactionCredit"},
        problems=(409, 422),
        problem_codes={
            409: ("reading_not_claimable", "claim_already_made", "claim_exceeds_paid"),
            422: ("idempotency_key_reused",),
        },
        caller_batch=True,
        tag="admin",
    ),
]
