"""Advisor payouts on request: `POST /v1/advisors/me/payouts` (Idempotency-Key),
and the advisor's own list and payouts (`GET /v1/advisors/me/payouts[/{id}]`).

Two D1 round trips around PayPal (payout_flow.py has the life of a payout):
  1. claim, one batch with the caller lookup (Route(caller_batch=True), every
     statement naming the caller by Clerk sub): the stored reply for the key (and
     its payout while the key is pending), the advisor's facts for a refusal, then
     the payout row taken by INSERT ... SELECT from the payout method and the
     cleared balance (the amount, the minimum and the balance judged in SQL), its
     money (cleared -> in transit, the amount read from that row) and the key
     claimed `pending` with the payout's id, each made only if the payout row
     was: a refusal or a replay writes nothing;
  2. after PayPal, one batch: what PayPal said (sent, refused and returned, or
     nothing yet) and the key's reply, its status read back in SQL.
Answers: 201 PayPal accepted the payout (`sent`, or further if PayPal has
already decided); 202 PayPal's answer did not come (`requested`: the cron sends
it again with the same sender_batch_id, which PayPal pays at most once); 502
`payout_refused` PayPal refused it (`failed`, the money is back in cleared
earnings: the second movement, in the second batch). A retry with the same key
replays the reply (one call); a key left `pending` by a request that died is
resumed from the first batch's read: the payout is sent (again) and the reply stored.

Refusals before anything moves, named from the facts the claim batch read
(the claim found nothing to do): 404 not an advisor; 409 `payout_method_required`
(no receiver set), 422 `payout_below_minimum` (under PAYOUT_MIN_CENTS), 409
`insufficient_cleared_earnings` (more than the cleared balance: judged by the
claim's INSERT inside the batch, so concurrent payouts cannot overdraw it).
"""

import json
from typing import Any

from . import ledger, logs, payout_flow, payout_send, users
from .db import Statement, sql
from .errors import Problem, conflict, not_found, unprocessable
from .idempotency import IdempotencyKey, RequestKey
from .ids import new_id
from .openapi import page_schema
from .readings import parse_time_cursor, time_cursor
from .requests import RequestContext
from .responses import Reply, encode_json
from .routing import Route
from .validation import Int, Obj, page_query

DEFAULT_PAGE = 20
MAX_PAGE = 100

PAYOUT_BODY = Obj(
    {
        "amount_cents": Int(
            low=1,
            high=ledger.MAX_TRANSFER_CENTS,
            description="default: the whole cleared balance; at least PAYOUT_MIN_CENTS",
        )
    }
)

# The caller's facts a refusal is named from, read after the claim only when it
# made no payout (a refusal writes nothing, so they are what the claim judged).
_FACTS = """
WITH me AS (SELECT id FROM users WHERE clerk_user_id = ?)
SELECT EXISTS (SELECT 1 FROM advisors WHERE user_id = me.id) AS advisor,
       EXISTS (SELECT 1 FROM payout_methods WHERE user_id = me.id) AS has_method,
       (SELECT balance_cents FROM accounts WHERE owner_user_id = me.id AND kind = 'advisor_cleared') AS cleared_cents
FROM me WHERE NOT EXISTS (SELECT 1 FROM payouts WHERE id = ? AND advisor_id = me.id)"""

# The payout a key of the caller's names while it is pending (a retry resumes it).
_PAYOUT_OF_PENDING_KEY = f"""
SELECT {payout_flow.PAYOUT_COLUMNS} FROM payouts
WHERE advisor_id = (SELECT id FROM users WHERE clerk_user_id = ?)
  AND id = (SELECT CAST(json_extract(response_body, '$.payout_id') AS INTEGER) FROM idempotency_keys
            WHERE user_id = (SELECT id FROM users WHERE clerk_user_id = ?) AND idempotency_key = ?
              AND state = 'pending' AND json_valid(response_body))"""  # noqa: S608 - constant columns

_IS_ADVISOR = "SELECT 1 AS ok FROM advisors WHERE user_id = (SELECT id FROM users WHERE clerk_user_id = ?)"

# The payouts list shows the balances beside the page.
_BALANCES = """
WITH me AS (SELECT id FROM users WHERE clerk_user_id = ?)
SELECT (SELECT balance_cents FROM accounts WHERE owner_user_id = me.id AND kind = 'advisor_earnings') AS pending_cents,
       (SELECT balance_cents FROM accounts WHERE owner_user_id = me.id AND kind = 'advisor_cleared') AS cleared_cents
FROM me"""

_PAGE = f"""
SELECT {payout_flow.PAYOUT_COLUMNS} FROM payouts
WHERE advisor_id = (SELECT id FROM users WHERE clerk_user_id = ?) AND (created_at_ms, id) < (?, ?)
ORDER BY created_at_ms DESC, id DESC LIMIT ?"""  # noqa: S608 - constant columns

_ONE = f"""
SELECT {payout_flow.PAYOUT_COLUMNS} FROM payouts
WHERE id = ? AND advisor_id = (SELECT id FROM users WHERE clerk_user_id = ?)"""  # noqa: S608 - constant columns

_ONE_BY_ID = f"SELECT {payout_flow.PAYOUT_COLUMNS} FROM payouts WHERE id = ? AND advisor_id = ?"  # noqa: S608

_NOT_ADVISOR = "advisor profile (become an advisor with POST /v1/advisors)"


def _reply_parts(payout: dict[str, Any], sent: payout_send.Sent) -> tuple[int, dict[str, Any], str]:
    """(HTTP status, body, JSON path of the payout's status in the body)."""
    view = payout_flow.payout_view({**payout, "paypal_batch_id": payout.get("paypal_batch_id") or sent.batch_id})
    if sent.refused is not None:
        problem = Problem(
            502,
            "payout_refused",
            "Payout refused",
            f"PayPal refused the payout ({sent.refused}); the amount is back in your cleared earnings.",
            extra={"payout": {**view, "status": "failed", "failure_code": sent.refused}},
        )
        return 502, problem.body(), "$.payout.status"
    return (201 if sent.accepted else 202), view, "$.status"


def _complete(key: IdempotencyKey, payout_id: int, status: int, body: dict[str, Any], path: str) -> Statement:
    """Store the reply, the payout's status as this batch leaves it (SQL fills it in)."""
    return sql(
        """UPDATE idempotency_keys
           SET state = 'done', response_status = ?,
               response_body = json_set(?, ?, (SELECT status FROM payouts WHERE id = ? AND advisor_id = ?))
           WHERE user_id = ? AND idempotency_key = ? AND state = 'pending'
           RETURNING response_status, response_body""",
        status,
        encode_json(body),
        path,
        payout_id,
        key.user_id,
        key.user_id,
        key.key,
    )


async def _send_and_answer(rc: RequestContext, key: IdempotencyKey, payout: dict[str, Any]) -> Reply:
    now_ms = rc.clock.now_ms()
    if payout["status"] == "requested":
        sent = await payout_send.send(rc.settings, payout, now_ms)
    else:  # already moved on (a resumed key whose payout the cron or a webhook advanced)
        final = payout["status"] in ("failed", "returned")
        sent = payout_send.Sent([], not final, (payout["failure_code"] or payout["status"]) if final else None)
    status, body, path = _reply_parts(payout, sent)
    completion = _complete(key, int(payout["id"]), status, body, path)
    results = await payout_send.settle(rc.db, [*sent.statements, completion], int(payout["id"]), [completion])
    stored = results[-1].rows if results else []
    if not stored:
        return await key.replay(rc.db)  # completed by an earlier attempt whose answer D1 lost
    return _final(int(stored[0]["response_status"]), stored[0]["response_body"])


def _final(status: int, response_body: str) -> Reply:
    content_type = "application/problem+json" if status >= 400 else "application/json"
    return Reply(json.loads(response_body), status, {}, content_type)


async def _resume(rc: RequestContext, key: IdempotencyKey, row: dict[str, Any], pending: list[dict[str, Any]]) -> Reply:
    """A retry of a key still pending: its request died after the claim (or is
    still waiting on PayPal). Sending again is safe (same sender_batch_id). Its
    payout came with the key, in the first batch."""
    mine = row["request_sha256"] == key.request_sha256 and row["route"] == key.route
    if row["state"] != "pending" or not mine or not pending:
        return key.replay_row(row)  # done: its reply; else 422, or 409 while it is in progress
    return await _send_and_answer(rc, key, pending[0])


def _unconfigured(rc: RequestContext) -> bool:
    s = rc.settings
    return not (s.paypal_endpoint and s.paypal_client_id and s.paypal_client_secret and s.payout_keys)


async def request_payout(rc: RequestContext) -> Reply:
    body = await rc.parsed_body()
    if _unconfigured(rc):
        raise Problem(500, "misconfigured", "Server misconfigured", "Payouts are not configured.")
    requested = await RequestKey.from_request(rc)
    sub = users.caller_sub(rc)
    payout_id = new_id()
    minimum = rc.settings.payout_min_cents
    # 1. The claim, in ONE batch with the caller lookup: the key as it was and its
    # payout, the claim, all of it conditional on the payout row its INSERT ... SELECT
    # makes or not (payout_flow.claim_statements), then the facts of a refusal.
    stored, pending, claimed, *_claim, facts = await users.with_caller(
        rc,
        [
            requested.stored(sub),
            sql(_PAYOUT_OF_PENDING_KEY, sub, sub, requested.key),
            *payout_flow.claim_statements(
                payout_id=payout_id,
                origin="request",
                amount_cents=body.get("amount_cents"),
                min_cents=minimum,
                now_ms=requested.now_ms,
                caller_sub=sub,
                unless_key=requested.key,
            ),
            requested.claim_pending_if_exists(sub, {"payout_id": str(payout_id)}, "payouts", payout_id),
            sql(_FACTS, sub, payout_id),
        ],
    )
    key = requested.for_user(rc.user_id)
    if stored.rows:
        return await _resume(rc, key, stored.rows[0], pending.rows)
    if claimed.rows:
        # 2. PayPal, then the second batch.
        return await _send_and_answer(rc, key, claimed.rows[0])
    raise _refusal(facts.rows[0] if facts.rows else {}, body.get("amount_cents"), minimum)


def _refusal(facts: dict[str, Any], asked: int | None, minimum: int) -> Problem:
    """Why the claim found nothing to do, in the order its conditions are read."""
    if not facts.get("advisor"):
        return not_found(_NOT_ADVISOR)
    if not facts["has_method"]:
        return conflict("payout_method_required", "Set where payouts go first: PUT /v1/advisors/me/payout-method.")
    cleared = int(facts["cleared_cents"] or 0)
    amount = cleared if asked is None else asked
    if amount < minimum:
        problem = unprocessable(
            "payout_below_minimum", f"A payout is at least {minimum} cents; you asked for {amount}."
        )
        problem.extra = {"minimum_cents": minimum, "cleared_cents": cleared}
        return problem
    if amount <= cleared:
        logs.error("payout_claim_unexplained", cleared_cents=cleared, amount_cents=amount)
    return _insufficient(cleared)


def _insufficient(cleared: int | None) -> Problem:
    detail = "The payout is more than your cleared earnings"
    problem = conflict(
        "insufficient_cleared_earnings", detail + (f" ({cleared} cents)." if cleared is not None else ".")
    )
    if cleared is not None:
        problem.extra = {"cleared_cents": cleared}
    return problem


async def list_payouts(rc: RequestContext) -> Reply:
    query = rc.parsed_query()
    limit = query.get("limit", DEFAULT_PAGE)
    before_ms, before_id = parse_time_cursor(query.get("cursor"))
    sub = users.caller_sub(rc)
    # One call: the caller lookup, the advisor, the balances and the page (Route(caller_batch=True)).
    advisor, balances, page = await users.with_caller(
        rc,
        [sql(_IS_ADVISOR, sub), sql(_BALANCES, sub), sql(_PAGE, sub, before_ms, before_id, limit + 1)],
    )
    if not advisor.rows:
        raise not_found(_NOT_ADVISOR)
    rows = page.rows[:limit]
    next_cursor = None
    if len(page.rows) > limit:
        next_cursor = time_cursor(int(rows[-1]["created_at_ms"]), int(rows[-1]["id"]))
    b = balances.rows[0]
    return Reply(
        {
            "pending_cents": int(b["pending_cents"] or 0),
            "cleared_cents": int(b["cleared_cents"] or 0),
            "items": [payout_flow.payout_view(r) for r in rows],
            "next_cursor": next_cursor,
        }
    )


def _preload_payout(params: dict[str, Any], caller_sub: str) -> Statement:
    """Route.preload: the caller's payout, read with the caller lookup (one call)."""
    return sql(_ONE, params["payout_id"], caller_sub)


async def get_payout(rc: RequestContext) -> Reply:
    rows = rc.take_preloaded()
    if rows is None:  # no preload ran (see RequestContext.take_preloaded)
        rows = (await rc.db.all(sql(_ONE_BY_ID, rc.params["payout_id"], rc.user_id))).rows
    if not rows:
        raise not_found("payout")
    return Reply(payout_flow.payout_view(rows[0]))


_PAYOUT_PROPS = {
    "id": {"type": "string"},
    "amount_cents": {"type": "integer", "minimum": 1},
    "currency": {"type": "string", "enum": ["USD"]},
    "status": {"type": "string", "enum": ["requested", "sent", "unclaimed", "succeeded", "failed", "returned"]},
    "origin": {"type": "string", "enum": ["request", "schedule"]},
    "recipient_type": {"type": "string", "enum": ["EMAIL", "PAYPAL_ID"]},
    "receiver_masked": {"type": ["string", "null"]},
    "paypal_batch_id": {"type": ["string", "null"]},
    "item_status": {"type": ["string", "null"], "description": "PayPal's transaction_status of the item"},
    "failure_code": {"type": ["string", "null"], "description": "PayPal's error name when it refused or failed"},
    "created_at": {"type": "string", "format": "date-time"},
    "updated_at": {"type": "string", "format": "date-time"},
}
_LIST = page_schema("Payout")
_LIST["required"] = ["pending_cents", "cleared_cents", *_LIST["required"]]
_LIST["properties"] = {
    "pending_cents": {"type": "integer", "description": "earnings still on hold (EARNINGS_HOLD_DAYS)"},
    "cleared_cents": {"type": "integer", "description": "earnings that can be paid out"},
    **_LIST["properties"],
}
SCHEMAS: dict[str, Any] = {
    "Payout": {"type": "object", "required": list(_PAYOUT_PROPS), "properties": _PAYOUT_PROPS},
    "PayoutList": _LIST,
}

ROUTES = [
    Route(
        "POST",
        "/v1/advisors/me/payouts",
        request_payout,
        "Advisor: pay cleared earnings out to the PayPal receiver (all of them unless amount_cents says less)",
        primary=True,
        body=PAYOUT_BODY,
        idempotency_key=True,
        caller_batch=True,
        responses={201: "Payout", 202: "Payout"},
        problems=(409, 422, 502),
        problem_codes={
            409: (
                "payout_method_required",
                "insufficient_cleared_earnings",
                "request_in_progress",
                "idempotency_conflict",
            ),
            422: ("payout_below_minimum", "idempotency_key_reused"),
            502: ("payout_refused",),
        },
        tag="payouts",
    ),
    Route(
        "GET",
        "/v1/advisors/me/payouts",
        list_payouts,
        "Advisor: pending and cleared earnings, and payouts newest first",
        primary=True,
        query=page_query(cursor_max_chars=40, max_page=MAX_PAGE, default_page=DEFAULT_PAGE),
        caller_batch=True,
        responses={200: "PayoutList"},
        tag="payouts",
    ),
    Route(
        "GET",
        "/v1/advisors/me/payouts/{payout_id:id}",
        get_payout,
        "Advisor: one of your payouts",
        primary=True,
        preload=_preload_payout,
        responses={200: "Payout"},
        tag="payouts",
    ),
]
