"""Readings: request, accept/decline, cancel, heartbeat, end, and the lists.

The lifecycle is a state machine enforced in SQL:

    requested -> active     (accept: also charges minute 1, same batch)
    requested -> declined | cancelled | expired
    active    -> ended      (end, heartbeat/cron when funds run out or either
                             side's heartbeats stop: see billing.py)

Every transition is a conditional UPDATE on the status it leaves (and the
version the caller read), and a trigger (migrations/0020) refuses any other
status change, so an illegal or lost-race transition changes nothing and
answers 409. Accept and end are idempotent: repeated on a reading already
accepted (ended), they answer the reading as it is and change nothing, so a
client whose answer was lost after the batch committed can simply retry.
Billing lives in billing.py.

Authorization: every query names the caller in its WHERE clause; a reading
that is not the caller's answers 404 (no existence oracle). Nothing the
advisor receives depends on the client's wallet (billing.balance_view).
"""

from typing import Any

from . import billing, ledger, limits, offers, users
from .clock import rfc3339
from .db import Database, Statement, TriggerAbort, UniqueViolation, sql
from .errors import Problem, bad_request, conflict, forbidden, not_found, service_unavailable
from .idempotency import RequestKey
from .ids import new_id, parse_id
from .openapi import page_schema
from .requests import RequestContext
from .responses import Reply
from .routing import Route
from .validation import Obj, Str, page_query

DEFAULT_PAGE = 20
MAX_PAGE = 100

SELECT_FOR_PARTICIPANT = billing.SELECT_READING + " AND (r.client_id = ? OR r.advisor_id = ?)"
# The same read before the caller's id is known: the caller named by its Clerk
# `sub` (UNIQUE index: one more row read). Sent with the caller lookup.
_SELECT_FOR_SUB = (
    billing.SELECT_READING  # noqa: S608 - constant text, `?` placeholders only
    + " AND (SELECT id FROM users WHERE clerk_user_id = ?) IN (r.client_id, r.advisor_id)"
)


def reading_view(row: dict[str, Any], viewer_id: int) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "client_id": str(row["client_id"]),
        "advisor_id": str(row["advisor_id"]),
        "role": "client" if int(row["client_id"]) == viewer_id else "advisor",
        "channel": row["channel"],
        "status": row["status"],
        "rate_cents_per_minute": int(row["rate_cents_per_minute"]),
        "billing_period_seconds": int(row["billing_period_seconds"]),
        "billed_minutes": int(row["billed_minutes"]),
        "billed_cents": int(row["billed_minutes"]) * int(row["rate_cents_per_minute"]),
        "end_reason": row["end_reason"],
        "requested_at": rfc3339(row["requested_at_ms"]),
        "accepted_at": rfc3339(row["accepted_at_ms"]),
        "ended_at": rfc3339(row["ended_at_ms"]),
        "last_heartbeat_at": rfc3339(row["last_heartbeat_at_ms"]),
        "client_heartbeat_at": rfc3339(row["client_heartbeat_at_ms"]),
        "advisor_heartbeat_at": rfc3339(row["advisor_heartbeat_at_ms"]),
        "heartbeat_timeout_seconds": int(row["heartbeat_timeout_seconds"]),
        "silent_party": row["silent_party"],
        "version": int(row["version"]),
    }


def billed_view(row: dict[str, Any], viewer_id: int, now_ms: int) -> dict[str, Any]:
    return {**reading_view(row, viewer_id), **billing.balance_view(row, viewer_id, now_ms)}


async def load_participant(db: Database, reading_id: int, user_id: int) -> dict[str, Any]:
    row = await db.first(sql(SELECT_FOR_PARTICIPANT, reading_id, user_id, user_id))
    if row is None:
        raise not_found("reading")
    return row


def preload_participant(params: dict[str, Any], caller_sub: str) -> Statement:
    """Route.preload of the routes whose first read is the caller's reading."""
    return sql(_SELECT_FOR_SUB, params["reading_id"], caller_sub)


async def caller_reading(rc: RequestContext) -> dict[str, Any]:
    """The reading of the path, if the caller takes part in it (else 404): the
    row read with the caller lookup when the route preloads it, else a read."""
    rows = rc.take_preloaded()
    if rows is None:
        return await load_participant(rc.db, rc.params["reading_id"], rc.user_id)
    if not rows:
        raise not_found("reading")
    assert len(rows) == 1 and int(rows[0]["id"]) == rc.params["reading_id"]
    assert rc.user_id in (int(rows[0]["client_id"]), int(rows[0]["advisor_id"])), "preload scoped to the caller"
    return rows[0]


def not_in_status(row: dict[str, Any], wanted: str, action: str) -> Problem:
    return Problem(
        409,
        "reading_illegal_transition",
        "Conflict",
        f"Cannot {action} a reading that is {row['status']} (it must be {wanted}).",
        extra={"reading_status": row["status"]},
    )


# --- request ---------------------------------------------------------------

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


# --- advisor: accept / decline ---------------------------------------------

_ACCEPT = """
UPDATE readings
SET status = 'active', accepted_at_ms = ?, last_heartbeat_at_ms = ?, version = version + 1
WHERE id = ? AND advisor_id = ? AND status = 'requested' AND version = ? AND requested_at_ms >= ?"""

_EXPIRE_ONE = """
UPDATE readings SET status = 'expired', ended_at_ms = requested_at_ms + ?, version = version + 1
WHERE id = ? AND status = 'requested' AND requested_at_ms < ?"""


async def _load_as_advisor(rc: RequestContext) -> dict[str, Any]:
    row = await caller_reading(rc)
    if int(row["advisor_id"]) != rc.user_id:
        raise forbidden("Only the reading's advisor may do this.")
    return row


async def _expire_if_late(rc: RequestContext, row: dict[str, Any], now_ms: int) -> None:
    timeout_ms = rc.settings.request_timeout_s * 1000
    if row["status"] == "requested" and now_ms - int(row["requested_at_ms"]) > timeout_ms:
        await rc.db.run(sql(_EXPIRE_ONE, timeout_ms, row["id"], now_ms - timeout_ms))
        raise Problem(
            409,
            "reading_expired",
            "Conflict",
            "The request was not accepted in time and has expired.",
            extra={"reading_status": "expired"},
        )


def _already_accepted(row: dict[str, Any], viewer_id: int, now_ms: int) -> Reply | None:
    """Accept is idempotent: a reading this advisor already accepted answers as
    it is and charges nothing. A retry whose first answer was lost after its
    batch committed (or a double tap racing it) lands here, not on a 409."""
    if row["accepted_at_ms"] is None:
        return None
    return Reply(billed_view(row, viewer_id, now_ms))


async def accept_reading(rc: RequestContext) -> Reply:
    row = await _load_as_advisor(rc)
    now_ms = rc.clock.now_ms()
    if (done := _already_accepted(row, rc.user_id, now_ms)) is not None:
        return done
    if row["status"] != "requested":
        raise not_in_status(row, "requested", "accept")
    await _expire_if_late(rc, row, now_ms)
    for _attempt in range(3):
        active = {**row, "status": "active", "accepted_at_ms": now_ms, "last_heartbeat_at_ms": now_ms}
        statements = [
            sql(
                _ACCEPT,
                now_ms,
                now_ms,
                row["id"],
                rc.user_id,
                row["version"],
                now_ms - rc.settings.request_timeout_s * 1000,
            ),
            # A free-minute offer's grant, then minute 1, in the same batch (offers.py);
            # minute 1's trigger requires the reading to be active, so a lost race
            # rolls the whole batch back.
            *offers.accept_charges(active, rc.settings, now_ms, rc.user_id),
            sql(billing.SELECT_READING, row["id"]),
        ]
        try:
            results = await rc.db.batch(statements)
        except UniqueViolation as exc:
            fresh = await load_participant(rc.db, row["id"], rc.user_id)
            if (done := _already_accepted(fresh, rc.user_id, now_ms)) is not None:
                # Minute 1's transfer key exists: a concurrent accept of this reading
                # committed first (the whole batch rolled back).
                return done
            if "free_minute_offers.client_id" not in exc.columns:
                raise
            row = fresh  # the client's new-client offer went to another reading meanwhile
            continue
        except TriggerAbort as exc:
            if exc.code == "insufficient_funds":
                raise Problem(
                    402,
                    "insufficient_funds",
                    "Payment required",
                    "The client's wallet and promo credit cannot pay the first minute; nothing changed.",
                    extra={"reading_status": "requested"},
                ) from None
            if exc.code not in ("reading_not_billable", *billing.PROMO_RETRY_CODES, *offers.RETRY_CODES):
                raise
            fresh = await load_participant(rc.db, row["id"], rc.user_id)
            if (done := _already_accepted(fresh, rc.user_id, now_ms)) is not None:
                return done
            if exc.code == "reading_not_billable":
                raise not_in_status(fresh, "requested", "accept") from None
            row = fresh  # an offer or a grant moved since the read: plan again
            continue
        fresh_row = results[-1].rows[0]
        return Reply(billed_view(fresh_row, rc.user_id, now_ms))
    raise service_unavailable("The client's promo credit keeps changing; retry.")


_DECLINE = """
UPDATE readings SET status = 'declined', ended_at_ms = ?, version = version + 1
WHERE id = ? AND advisor_id = ? AND status = 'requested'
RETURNING id"""

_CANCEL = """
UPDATE readings SET status = 'cancelled', ended_at_ms = ?, version = version + 1
WHERE id = ? AND client_id = ? AND status = 'requested'
RETURNING id"""


async def _close_request(rc: RequestContext, statement: str, action: str) -> Reply:
    now_ms = rc.clock.now_ms()
    reading_id = rc.params["reading_id"]
    # The conditional UPDATE and the read of the result in one round trip.
    done, fresh = await rc.db.batch(
        [
            sql(statement, now_ms, reading_id, rc.user_id),
            sql(SELECT_FOR_PARTICIPANT, reading_id, rc.user_id, rc.user_id),
        ]
    )
    if not fresh.rows:
        raise not_found("reading")
    row = fresh.rows[0]
    if not done.rows:
        raise not_in_status(row, "requested", action)
    return Reply(reading_view(row, rc.user_id))


async def decline_reading(rc: RequestContext) -> Reply:
    await _load_as_advisor(rc)
    return await _close_request(rc, _DECLINE, "decline")


async def cancel_reading(rc: RequestContext) -> Reply:
    row = await caller_reading(rc)
    if int(row["client_id"]) != rc.user_id:
        raise forbidden("Only the reading's client may cancel it.")
    return await _close_request(rc, _CANCEL, "cancel")


# --- billing: heartbeat / end -----------------------------------------------


async def heartbeat(rc: RequestContext) -> Reply:
    row = await caller_reading(rc)
    if row["status"] not in ("active", "ended"):
        raise not_in_status(row, "active", "send a heartbeat to")
    now_ms = rc.clock.now_ms()
    row = await billing.advance(rc.db, row, now_ms, "heartbeat", rc.user_id)
    return Reply(billed_view(row, rc.user_id, now_ms))


async def end_reading(rc: RequestContext) -> Reply:
    row = await caller_reading(rc)
    if row["status"] == "ended":
        # End is idempotent, like a heartbeat on an ended reading: the reading
        # as it ended (end_reason says by whom or why), nothing charged. A
        # retry whose first answer was lost after the end committed lands here.
        return Reply(billed_view(row, rc.user_id, rc.clock.now_ms()))
    if row["status"] != "active":
        raise not_in_status(row, "active", "end")
    action: billing.Action = "client_ended" if int(row["client_id"]) == rc.user_id else "advisor_ended"
    now_ms = rc.clock.now_ms()
    row = await billing.advance(rc.db, row, now_ms, action, rc.user_id)
    return Reply(billed_view(row, rc.user_id, now_ms))


# --- reads ------------------------------------------------------------------


async def get_reading(rc: RequestContext) -> Reply:
    row = await caller_reading(rc)
    return Reply(billed_view(row, rc.user_id, rc.clock.now_ms()))


# Newest first over both roles: two index walks (client's, advisor's), each
# already limited, merged. The cursor is (requested_at_ms, id) of the last row.
_LIST = f"""
SELECT * FROM (SELECT {billing.READING_COLUMNS} FROM readings r
               WHERE r.client_id = ? AND (r.requested_at_ms, r.id) < (?, ?)
               ORDER BY r.requested_at_ms DESC, r.id DESC LIMIT ?)
UNION ALL
SELECT * FROM (SELECT {billing.READING_COLUMNS} FROM readings r
               WHERE r.advisor_id = ? AND (r.requested_at_ms, r.id) < (?, ?)
               ORDER BY r.requested_at_ms DESC, r.id DESC LIMIT ?)
ORDER BY requested_at_ms DESC, id DESC LIMIT ?"""  # noqa: S608 - constant text

READING_LIST_QUERY = page_query(cursor_max_chars=40, max_page=MAX_PAGE, default_page=DEFAULT_PAGE)


# Above every time and id. (2**53 - 1 itself reaches D1 as a BigInt, which it refuses.)
_NO_CURSOR = 2**52


def parse_time_cursor(raw: str | None) -> tuple[int, int]:
    """'<ms>.<id>' -> (ms, id); no cursor -> past every row."""
    if raw is None:
        return _NO_CURSOR, _NO_CURSOR
    ms, _, ident = raw.partition(".")
    if not (ms.isascii() and ms.isdigit() and ident.isascii() and ident.isdigit()) or len(ms) > 16 or len(ident) > 16:
        raise bad_request("'cursor' is not a cursor this API returned.", "cursor", code="invalid_cursor")
    return min(int(ms), _NO_CURSOR), min(int(ident), _NO_CURSOR)


def time_cursor(ms: int, ident: int) -> str:
    return f"{ms}.{ident}"


async def list_readings(rc: RequestContext) -> Reply:
    query = rc.parsed_query()
    limit = query.get("limit", DEFAULT_PAGE)
    before_ms, before_id = parse_time_cursor(query.get("cursor"))
    uid = rc.user_id
    result = await rc.db.all(
        sql(_LIST, uid, before_ms, before_id, limit + 1, uid, before_ms, before_id, limit + 1, limit + 1)
    )
    rows = result.rows[:limit]
    next_cursor = None
    if len(result.rows) > limit:
        next_cursor = time_cursor(int(rows[-1]["requested_at_ms"]), int(rows[-1]["id"]))
    return Reply({"items": [reading_view(r, uid) for r in rows], "next_cursor": next_cursor})


_READING_PROPS: dict[str, Any] = {
    "id": {"type": "string"},
    "client_id": {"type": "string"},
    "advisor_id": {"type": "string"},
    "role": {"type": "string", "enum": ["client", "advisor"], "description": "The caller's part in the reading."},
    "channel": {"type": "string", "enum": ["chat"]},
    "status": {"type": "string", "enum": ["requested", "active", "ended", "declined", "cancelled", "expired"]},
    "rate_cents_per_minute": {"type": "integer", "description": "Fixed when the reading was requested."},
    "billing_period_seconds": {"type": "integer"},
    "billed_minutes": {"type": "integer"},
    "billed_cents": {"type": "integer"},
    "end_reason": {
        "type": ["string", "null"],
        "enum": ["client_ended", "advisor_ended", "insufficient_funds", "heartbeat_timeout", None],
    },
    "requested_at": {"type": "string", "format": "date-time"},
    "accepted_at": {"type": ["string", "null"], "format": "date-time"},
    "ended_at": {"type": ["string", "null"], "format": "date-time"},
    "last_heartbeat_at": {
        "type": ["string", "null"],
        "format": "date-time",
        "description": "The latest heartbeat from either side.",
    },
    "client_heartbeat_at": {
        "type": ["string", "null"],
        "format": "date-time",
        "description": "The client's last heartbeat (null: none since the accept).",
    },
    "advisor_heartbeat_at": {
        "type": ["string", "null"],
        "format": "date-time",
        "description": "The advisor's last heartbeat (null: none since the accept).",
    },
    "heartbeat_timeout_seconds": {
        "type": "integer",
        "description": "Fixed when the reading was requested. A side silent for longer ends the reading at its last "
        "heartbeat; nothing begun after that is billed.",
    },
    "silent_party": {
        "type": ["string", "null"],
        "enum": ["client", "advisor", "both", None],
        "description": "Who went silent, when end_reason is heartbeat_timeout.",
    },
    "version": {"type": "integer"},
}

SCHEMAS: dict[str, Any] = {
    "Reading": {"type": "object", "required": list(_READING_PROPS), "properties": _READING_PROPS},
    "ReadingBilling": {
        "type": "object",
        "required": [*_READING_PROPS, "balance_cents", "promo_cents", "minutes_left", "low_balance"],
        "properties": {
            **_READING_PROPS,
            "balance_cents": {
                "type": ["integer", "null"],
                "description": "The client's wallet balance (null when the advisor asks).",
            },
            "promo_cents": {
                "type": ["integer", "null"],
                "description": "The client's valid promo credit, spent before the wallet (null when the advisor asks).",
            },
            "minutes_left": {
                "type": ["integer", "null"],
                "description": "Further minutes the client's promo credit and wallet can pay (null when the advisor "
                "asks).",
            },
            "low_balance": {
                "type": ["boolean", "null"],
                "description": "True when fewer than two minutes remain (null when the advisor asks).",
            },
        },
    },
    "ReadingList": page_schema("Reading"),
}

_ID = "/v1/readings/{reading_id:id}"

ROUTES = [
    Route(
        "POST",
        "/v1/readings",
        create_reading,
        "Request a reading (funds for the first minute needed)",
        primary=True,
        caller_batch=True,
        body=READING_CREATE,
        idempotency_key=True,
        responses={201: "Reading"},
        problems=(402, 403, 409, 422),
        tag="readings",
    ),
    Route(
        "GET",
        "/v1/readings",
        list_readings,
        "Your readings (as client or advisor), newest first",
        primary=True,
        query=READING_LIST_QUERY,
        responses={200: "ReadingList"},
        tag="readings",
    ),
    Route(
        "GET",
        _ID,
        get_reading,
        "A reading you take part in",
        primary=True,
        responses={200: "ReadingBilling"},
        tag="readings",
        preload=preload_participant,
    ),
    Route(
        "POST",
        _ID + "/accept",
        accept_reading,
        "Advisor: accept a request (charges minute 1); accepting again answers the reading, charging nothing",
        primary=True,
        responses={200: "ReadingBilling"},
        problems=(402, 403, 409),
        tag="readings",
        preload=preload_participant,
    ),
    Route(
        "POST",
        _ID + "/decline",
        decline_reading,
        "Advisor: decline a request",
        primary=True,
        responses={200: "Reading"},
        problems=(403, 409),
        tag="readings",
        preload=preload_participant,
    ),
    Route(
        "POST",
        _ID + "/cancel",
        cancel_reading,
        "Client: withdraw a request not yet accepted",
        primary=True,
        responses={200: "Reading"},
        problems=(403, 409),
        tag="readings",
        preload=preload_participant,
    ),
    Route(
        "POST",
        _ID + "/heartbeat",
        heartbeat,
        "Bill every minute begun (the advisor's: those the client was seen in); balance, minutes left, "
        "low-balance warning (the client's only); ends when funds run out or a side is silent past the timeout",
        primary=True,
        responses={200: "ReadingBilling"},
        problems=(409,),
        tag="readings",
        preload=preload_participant,
    ),
    Route(
        "POST",
        _ID + "/end",
        end_reading,
        "End the reading now; bills minutes begun (an ended reading answers as it ended)",
        primary=True,
        responses={200: "ReadingBilling"},
        problems=(409,),
        tag="readings",
        preload=preload_participant,
    ),
]
