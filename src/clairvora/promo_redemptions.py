"""Promo codes, the client side: `POST /v1/promo-codes/redeem` (the codes
themselves are made and disabled by admins: promo_codes.py).

The limits are judged by the redeeming INSERT itself (migration 0091's trigger
on promo_redemptions, then its count's CHECK): D1 runs statements one at a time
on the primary, so concurrent redemptions are counted one after another and the
one past a limit is refused with its own code, changing nothing (its batch
holds the grant or offer and the Idempotency-Key record). Refusals:
404 promo_code_not_found, 409 promo_code_disabled | promo_code_not_started |
promo_code_expired | promo_code_exhausted | promo_code_limit_reached.
"""

import json
from typing import Any

from . import promo, users
from .clock import rfc3339
from .db import TriggerAbort, UniqueViolation, sql
from .errors import Problem, conflict
from .idempotency import IdempotencyKey, RequestKey
from .ids import new_id
from .promo_codes import CODE_COLUMNS, CODE_PATTERN
from .requests import RequestContext
from .responses import Reply
from .routing import Route
from .validation import Obj, Str

REDEEM = Obj({"code": Str(min_len=3, max_len=32, pattern=CODE_PATTERN)}, required=("code",))

# The code and any stored answer for the key, sent with the caller lookup
# (Route(caller_batch=True)): the key is the caller's, named by its Clerk sub.
_REDEEM_READ = f"""
SELECT {CODE_COLUMNS},
       (SELECT json_array(k.route, k.request_sha256, k.state, k.response_status, k.response_body)
        FROM idempotency_keys k
        WHERE k.user_id = (SELECT id FROM users WHERE clerk_user_id = ?) AND k.idempotency_key = ?) AS stored
FROM (SELECT 1) LEFT JOIN promo_codes ON code = ?"""  # noqa: S608 - constant text

_REFUSALS = {
    "promo_code_disabled": "This code has been withdrawn.",
    "promo_code_not_started": "This code is not valid yet.",
    "promo_code_expired": "This code has expired.",
    "promo_code_exhausted": "This code has been used up.",
    "promo_code_limit_reached": "You have redeemed this code as often as it allows.",
}


def _stored(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    route, sha, state, status, body = json.loads(raw)
    return {"route": route, "request_sha256": sha, "state": state, "response_status": status, "response_body": body}


def redemption_view(row: dict[str, Any]) -> dict[str, Any]:
    """A redemption with its code's terms (`id`: the redemption's); the reply of
    the redeem and the export's item."""
    return {
        "id": str(row["id"]),
        "code": row["code"],
        "kind": "credit" if row["credit_cents"] is not None else "free_minutes",
        "credit_cents": row["credit_cents"],
        "free_minutes": row["free_minutes"],
        "max_cents_per_minute": row["max_cents_per_minute"],
        "expires_at": rfc3339(int(row["redeemed_at_ms"]) + int(row["credit_valid_days"]) * promo.DAY_MS),
        "redeemed_at": rfc3339(int(row["redeemed_at_ms"])),
    }


async def redeem(rc: RequestContext) -> Reply:
    body = await rc.parsed_body()
    requested = await RequestKey.from_request(rc)
    (read,) = await users.with_caller(
        rc, [sql(_REDEEM_READ, users.caller_sub(rc), requested.key, body["code"].upper())]
    )
    key = requested.for_user(rc.user_id)
    now_ms, uid = key.now_ms, rc.user_id
    (row,) = read.rows
    stored = _stored(row["stored"])
    if stored is not None:
        return key.replay_row(stored)
    if row["id"] is None:
        raise Problem(404, "promo_code_not_found", "Not found", "No such promo code.")
    redemption_id = new_id()
    expires_at_ms = now_ms + int(row["credit_valid_days"]) * promo.DAY_MS
    redemption = redemption_view({**row, "id": redemption_id, "redeemed_at_ms": now_ms})
    statements = [
        # The trigger judges every limit here; the row counts the code up (migration 0091).
        sql(
            "INSERT INTO promo_redemptions (id, promo_code_id, client_id, redeemed_at_ms) VALUES (?, ?, ?, ?)",
            redemption_id,
            row["id"],
            uid,
            now_ms,
        )
    ]
    if row["credit_cents"] is not None:
        statements += promo.grant_statements(
            client_id=uid,
            amount_cents=int(row["credit_cents"]),
            now_ms=now_ms,
            expires_at_ms=expires_at_ms,
            source="promo_code",
            redemption_id=redemption_id,
            requested_by_user_id=uid,
        ).statements
    else:
        statements.append(
            sql(
                """INSERT INTO free_minute_offers (id, client_id, source, redemption_id, minutes, max_cents_per_minute,
                                                   created_at_ms, expires_at_ms)
                   VALUES (?, ?, 'promo_code', ?, ?, ?, ?, ?)""",
                new_id(),
                uid,
                redemption_id,
                row["free_minutes"],
                row["max_cents_per_minute"],
                now_ms,
                expires_at_ms,
            )
        )
    reply = {"redemption": redemption}
    statements.append(key.record_done(201, reply))
    try:
        await rc.db.batch(statements)
    except TriggerAbort as exc:
        if exc.code in _REFUSALS:
            raise conflict(exc.code, _REFUSALS[exc.code]) from None
        raise
    except UniqueViolation as exc:
        if IdempotencyKey.is_key_conflict(exc):
            return await key.replay(rc.db)
        raise
    return Reply(reply, 201)


_REDEMPTION_PROPS: dict[str, Any] = {
    "id": {"type": "string"},
    "code": {"type": "string"},
    "kind": {"type": "string", "enum": ["credit", "free_minutes"]},
    "credit_cents": {"type": ["integer", "null"], "description": "Promo credit granted now."},
    "free_minutes": {"type": ["integer", "null"], "description": "Free minutes on your next accepted reading."},
    "max_cents_per_minute": {"type": ["integer", "null"]},
    "expires_at": {"type": "string", "format": "date-time", "description": "When the credit or offer lapses."},
    "redeemed_at": {"type": "string", "format": "date-time"},
}

SCHEMAS: dict[str, Any] = {
    "PromoRedemption": {
        "type": "object",
        "required": ["redemption"],
        "properties": {
            "redemption": {"type": "object", "required": list(_REDEMPTION_PROPS), "properties": _REDEMPTION_PROPS}
        },
    },
}

_REDEEM_CODES = (
    "promo_code_disabled",
    "promo_code_not_started",
    "promo_code_expired",
    "promo_code_exhausted",
    "promo_code_limit_reached",
)

ROUTES = [
    Route(
        "POST",
        "/v1/promo-codes/redeem",
        redeem,
        "Redeem a promo code: promo credit now, or free minutes on your next accepted reading",
        primary=True,
        body=REDEEM,
        idempotency_key=True,
        responses={201: "PromoRedemption"},
        problems=(409, 422),
        problem_codes={409: _REDEEM_CODES, 422: ("idempotency_key_reused",)},
        caller_batch=True,
        tag="wallet",
    ),
]
