"""`POST /v1/readings`: a client requests a reading of an advisor (status
`requested`; the advisor accepts or declines it: reading_transitions.py).

One read, the precheck, sent with the caller lookup (Route(caller_batch=True)),
gives each refusal its reason and finds any stored answer of the
Idempotency-Key; the INSERT then re-checks every condition in SQL, so what
changed in between writes nothing and the request looks again.
"""

from typing import Any

from . import ledger, limits, users
from .db import TriggerAbort, UniqueViolation, sql
from .errors import Problem, conflict, not_found
from .idempotency import RequestKey
from .ids import new_id, parse_id
from .readings import reading_view
from .requests import RequestContext
from .responses import Reply
from .validation import Obj, Str

READING_CREATE = Obj(
    {
        "advisor_id": Str(min_len=1, max_len=20, description="The advisor's id."),
        "channel": Str(max_len=8, choices=("chat",)),
    },
    required=("advisor_id",),
)

# One read: the advisor, the caller's wallet and valid promo credit (at ?1), a
# pending free-minute offer, any open reading and any stored answer for the key.
# `me` is the caller: its id, or (the first try, sent with the caller lookup:
# Route(caller_batch=True)) its users row found by Clerk sub.
_PRECHECK = """
WITH me AS ({me})
SELECT a.user_id AS advisor_id, a.rate_cents_per_minute, a.status AS advisor_status,
       w.balance_cents AS wallet_cents, b.client_id IS NOT NULL AS blocked,
       u.self_excluded_until_ms, u.self_exclusion_pending_until_ms, u.self_exclusion_pending_at_ms,
       (SELECT coalesce(sum(remaining_cents), 0) FROM promo_grants
        WHERE client_id = me.id AND remaining_cents > 0 AND expires_at_ms > ?1) AS promo_cents,
       EXISTS (SELECT 1 FROM free_minute_offers
               WHERE client_id = me.id AND reading_id IS NULL AND expires_at_ms > ?1) AS has_offer,
       k.route AS k_route, k.request_sha256 AS k_sha, k.state AS k_state,
       k.response_status AS k_status, k.response_body AS k_body,
       (SELECT id FROM readings WHERE client_id = me.id AND status IN ('requested', 'active')) AS open_reading_id
FROM me
LEFT JOIN advisors a ON a.user_id = ?2
LEFT JOIN accounts w ON w.owner_user_id = me.id AND w.kind = 'client_wallet'
LEFT JOIN advisor_blocks b ON b.advisor_id = a.user_id AND b.client_id = me.id
LEFT JOIN users u ON u.id = me.id
LEFT JOIN idempotency_keys k ON k.user_id = me.id AND k.idempotency_key = ?4"""
_PRECHECK_BY_ID = _PRECHECK.format(me="SELECT ?3 AS id")
_PRECHECK_BY_SUB = _PRECHECK.format(me="SELECT id FROM users WHERE clerk_user_id = ?3")

# Every condition again, in the statement that writes: the advisor is online,
# is not the caller, still charges the rate we quote, the client can pay the
# first minute (wallet and valid promo credit, or a pending free-minute offer),
# and the advisor has not blocked the caller (blocks.py). The partial UNIQUE
# index refuses a second open reading. The advisor's part of a promo-paid
# minute is fixed here with the other terms (promo.py).
_INSERT_READING = """
INSERT INTO readings (id, client_id, advisor_id, channel, status, rate_cents_per_minute, advisor_cents_per_minute,
                      platform_cents_per_minute, promo_advisor_cents_per_minute, billing_period_seconds,
                      heartbeat_timeout_seconds, requested_at_ms)
SELECT ?1, ?2, a.user_id, ?3, 'requested', a.rate_cents_per_minute, ?4, ?5, ?6, ?7, ?8, ?9
FROM advisors a
WHERE a.user_id = ?10 AND a.user_id <> ?2 AND a.status = 'online' AND a.rate_cents_per_minute = ?11
  AND (max(0, (SELECT balance_cents FROM accounts WHERE owner_user_id = ?2 AND kind = 'client_wallet'))
       + (SELECT coalesce(sum(remaining_cents), 0) FROM promo_grants
          WHERE client_id = ?2 AND remaining_cents > 0 AND expires_at_ms > ?9) >= a.rate_cents_per_minute
       OR EXISTS (SELECT 1 FROM free_minute_offers
                  WHERE client_id = ?2 AND reading_id IS NULL AND expires_at_ms > ?9))
  AND NOT EXISTS (SELECT 1 FROM advisor_blocks b WHERE b.advisor_id = a.user_id AND b.client_id = ?2)"""


def _stored_key(row: dict[str, Any]) -> dict[str, Any] | None:
    if row["k_state"] is None:
        return None
    return {
        "route": row["k_route"],
        "request_sha256": row["k_sha"],
        "state": row["k_state"],
        "response_status": row["k_status"],
        "response_body": row["k_body"],
    }


def _refusal(row: dict[str, Any], uid: int, now_ms: int) -> Problem | None:
    """Why a reading cannot be requested now (the SQL re-checks all of it)."""
    if row["advisor_id"] is None:
        return not_found("advisor")
    excluded_until = limits.excluded_until(row, now_ms)
    if excluded_until is not None:
        # migrations/0071: the trigger readings_self_exclusion refuses the INSERT too.
        return limits.self_excluded(excluded_until)
    if int(row["advisor_id"]) == uid:
        return Problem(422, "own_advisor", "Unprocessable request", "You cannot request a reading with yourself.")
    if row["blocked"]:
        # Blocked (blocks.py): the code an unavailable advisor answers, without its status.
        return Problem(409, "advisor_unavailable", "Conflict", "The advisor cannot take a reading with you.")
    if row["advisor_status"] != "online":
        return Problem(
            409,
            "advisor_unavailable",
            "Conflict",
            f"The advisor is {row['advisor_status']}.",
            extra={"advisor_status": row["advisor_status"]},
        )
    funds = max(0, int(row["wallet_cents"] or 0)) + int(row["promo_cents"] or 0)
    if funds < int(row["rate_cents_per_minute"]) and not row["has_offer"]:
        return Problem(
            402,
            "insufficient_funds",
            "Payment required",
            "Your wallet and promo credit cannot pay the first minute; add funds first.",
            extra={
                "balance_cents": int(row["wallet_cents"] or 0),
                "promo_cents": int(row["promo_cents"] or 0),
                "rate_cents_per_minute": int(row["rate_cents_per_minute"]),
            },
        )
    return None


def _already_open(open_reading_id: Any) -> Problem:
    extra = {"open_reading_id": str(open_reading_id)} if open_reading_id is not None else {}
    return Problem(
        409,
        "reading_already_open",
        "Conflict",
        "You already have an open reading; end or cancel it first.",
        extra=extra,
    )


async def create_reading(rc: RequestContext) -> Reply:
    body = await rc.parsed_body()
    advisor_id = parse_id(body["advisor_id"])
    if advisor_id is None:
        raise not_found("advisor")
    requested = await RequestKey.from_request(rc)
    (first,) = await users.with_caller(
        rc, [sql(_PRECHECK_BY_SUB, rc.clock.now_ms(), advisor_id, users.caller_sub(rc), requested.key)]
    )
    key = requested.for_user(rc.user_id)
    uid = rc.user_id
    now_ms = rc.clock.now_ms()
    period_s = rc.settings.billing_period_s
    timeout_s = rc.settings.heartbeat_timeout_s
    for attempt in range(3):
        pre = (
            first.rows[0] if attempt == 0 else await rc.db.first(sql(_PRECHECK_BY_ID, now_ms, advisor_id, uid, key.key))
        )
        assert pre is not None
        stored = _stored_key(pre)
        if stored is not None:
            return key.replay_row(stored)
        refusal = _refusal(pre, uid, now_ms)
        if refusal is not None:
            raise refusal
        if pre["open_reading_id"] is not None:
            # Seen by the precheck: answered without the INSERT the UNIQUE index would refuse.
            raise _already_open(pre["open_reading_id"])
        rate = int(pre["rate_cents_per_minute"])
        advisor_part, platform_part = ledger.split_rate(rate, rc.settings.platform_fee_bps)
        promo_advisor_part, _rest = ledger.split_rate(rate, 10_000 - rc.settings.promo_advisor_share_bps)
        reading_id = new_id()
        row = {
            "id": reading_id,
            "client_id": uid,
            "advisor_id": advisor_id,
            "channel": "chat",
            "status": "requested",
            "rate_cents_per_minute": rate,
            "billing_period_seconds": period_s,
            "billed_minutes": 0,
            "end_reason": None,
            "requested_at_ms": now_ms,
            "accepted_at_ms": None,
            "ended_at_ms": None,
            "last_heartbeat_at_ms": None,
            "client_heartbeat_at_ms": None,
            "advisor_heartbeat_at_ms": None,
            "heartbeat_timeout_seconds": timeout_s,
            "silent_party": None,
            "version": 1,
        }
        view = reading_view(row, uid)
        try:
            results = await rc.db.batch(
                [
                    sql(
                        _INSERT_READING,
                        reading_id,
                        uid,
                        "chat",
                        advisor_part,
                        platform_part,
                        promo_advisor_part,
                        period_s,
                        timeout_s,
                        now_ms,
                        advisor_id,
                        rate,
                    ),
                    key.record_done_if_exists(201, view, "readings", reading_id),
                ]
            )
        except TriggerAbort as exc:
            if exc.code != "self_excluded":
                raise
            # Self-exclusion began after the precheck: refused by the INSERT itself.
            raise limits.self_excluded(None) from None
        except UniqueViolation as exc:
            stored_row = await key.stored(rc.db)
            if stored_row is not None:
                return key.replay_row(stored_row)
            if "readings.client_id" in exc.columns:
                open_row = await rc.db.first(
                    sql("SELECT id FROM readings WHERE client_id = ? AND status IN ('requested', 'active')", uid)
                )
                raise _already_open(open_row["id"] if open_row else None) from None
            raise
        if results[0].changes == 1:
            return Reply(view, 201, {"location": f"/v1/readings/{reading_id}"})
        # Something changed since the read (status, rate, funds): look again.
    raise conflict("advisor_changed", "The advisor's profile keeps changing; try again.")
