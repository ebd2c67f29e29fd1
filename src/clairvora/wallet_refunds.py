"""Refunds of unused funds: `POST /v1/wallet/refunds` gives the client's cash
balance (or part of it) back to the card(s) it came from; `GET
/v1/wallet/refunds` and `GET /v1/wallet/refunds/{id}` show the client's own.

Only the wallet's cash (`client_wallet`) is ever refunded: promotional credit
lives in another account and never goes to a card. The money goes back through
Authorize.Net `refundTransaction` against the deposits it came from, newest
first, each deposit at most what is left of it (amount - reversed - refunded -
charged back), split over up to MAX_PARTS deposits. Eligible: approved
deposits younger than REFUND_WINDOW_DAYS (120; the gateway's limit counts from
settlement, which is later than our creation time, so this is on the safe side)
that the gateway reports SETTLED. An unsettled deposit cannot be refunded, only
voided, and a void cancels the whole charge, which a refund of what is left of
a wallet rarely is, so unsettled deposits are skipped: if the settled ones
cannot cover the amount asked for, the request is refused (409
`refund_not_available`, with `refundable_now_cents` and `settling_cents`;
Authorize.Net settles once a day). Without `amount_cents` everything
refundable now is refunded.

D1 round trips, 3 whatever the number of parts (each money movement one batch;
refund_parts.py; docs/BENCHMARKS.md "Round trips per route" says why not 2):
  1. read, with the caller lookup (Route(caller_batch=True)): the Idempotency-Key,
     the wallet, an open chargeback, the candidate deposits, and the refund a
     pending key names with its parts (so a retry resuming it reads nothing more);
  (gateway: getTransactionDetails per candidate until the amount is covered:
   settled or not, and the card's last 4 digits, which we never store)
  2. reserve, ONE batch: the key ('pending', naming the refund), the refund
     row, and per deposit its part + its `refunded_cents` + wallet -> refunds in transit;
  (gateway: refundTransaction per part)
  3. ONE batch settling or returning every part that has an answer (each
     part's movement whole in it), and the stored reply. A part found resolved
     meanwhile (a racing retry, the cron) aborts that batch whole; then each
     part goes alone and the reply is stored after them (_finish_each).
Answers: 201 (`completed`, or `partially_completed` when some part was refused
and its money is back in the wallet), 202 (`processing`: a gateway answer never
came; the cron's resolver decides), 502 `refund_failed` (every part refused;
all the money is back). A retry with the same key replays the answer. A retry
of a request that died after its reservation (its key still pending) resumes
it within RESUME_WINDOW_MS: it (re)sends each part still in transit, which the
gateway's duplicate check turns into the first delivery's answer if there was
one (refund_parts.py says why a resend's refusal is not trusted); later it is
answered from the refund's current state.
"""

import json
from typing import Any

from . import chargebacks, ledger, logs, users
from .db import CheckViolation, Database, Statement, TransientD1Error, TriggerAbort, UniqueViolation, sql
from .errors import Problem, conflict
from .idempotency import IdempotencyKey, RequestKey
from .ids import new_id
from .refund_gateway import plan_parts, send_part
from .refund_parts import IN_TRANSIT, Decision, reserve_statements, resolve_statements
from .refund_views import LIST_QUERY, get_refund, list_refunds, pending_refund_statements, read_refund, refund_view
from .requests import RequestContext
from .responses import Reply, encode_json
from .routing import Route
from .validation import Int, Obj

MAX_CANDIDATES = 10
RESUME_WINDOW_MS = 5 * 60_000
SETTLE_ATTEMPTS = 2

REFUND_BODY = Obj(
    {
        "amount_cents": Int(
            low=1, high=ledger.MAX_TRANSFER_CENTS, description="how much to refund; default: all that is refundable now"
        )
    }
)

# The request's first batch names the caller by Clerk sub (it travels with the caller lookup).
_STATE = """SELECT (SELECT balance_cents FROM accounts
          WHERE owner_user_id = (SELECT id FROM users WHERE clerk_user_id = ?) AND kind = 'client_wallet') AS wallet_cents,
  EXISTS (SELECT 1 FROM chargebacks
          WHERE user_id = (SELECT id FROM users WHERE clerk_user_id = ?) AND state = 'open') AS on_hold"""
_CANDIDATES = """
SELECT id, amount_cents - reversed_cents - refunded_cents - charged_back_cents AS left_cents,
       gateway_transaction_id, created_at_ms
FROM payments
WHERE user_id = (SELECT id FROM users WHERE clerk_user_id = ?) AND status = 'approved' AND created_at_ms > ?
  AND gateway_transaction_id IS NOT NULL AND amount_cents - reversed_cents - refunded_cents - charged_back_cents > 0
ORDER BY created_at_ms DESC, id DESC LIMIT ?"""


def _first_batch(caller_sub: str, requested: RequestKey, since_ms: int) -> list[Statement]:
    """Sent with the caller lookup (users.with_caller): the stored key, the wallet
    and any open chargeback, the candidate deposits, and the refund (with its
    parts) that the key names if it is still pending."""
    return [
        requested.stored(caller_sub),
        sql(_STATE, caller_sub, caller_sub),
        sql(_CANDIDATES, caller_sub, since_ms, MAX_CANDIDATES),
        *pending_refund_statements(caller_sub, requested.key),
    ]


def _reply_for(view: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(status, body); wallet.available_cents is filled in by SQL when stored."""
    wallet = {"available_cents": 0, "held_cents": 0, "currency": "USD"}
    if view["status"] == "failed":
        problem = Problem(
            502,
            "refund_failed",
            "Refund failed",
            "The card gateway refunded nothing; the money is back in your wallet.",
            extra={"refund": view, "wallet": wallet},
        )
        return problem.status, problem.body()
    return (202 if view["status"] == "processing" else 201), {"refund": view, "wallet": wallet}


def _complete(key: IdempotencyKey, status: int, body: dict[str, Any]) -> Statement:
    """Store the reply with the wallet balance as it is at the end of its batch."""
    return sql(
        """UPDATE idempotency_keys
           SET state = 'done', response_status = ?,
               response_body = json_set(?, '$.wallet.available_cents',
                 (SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet'))
           WHERE user_id = ? AND idempotency_key = ? AND state = 'pending'
           RETURNING response_status, response_body""",
        status,
        encode_json(body),
        key.user_id,
        key.user_id,
        key.key,
    )


def _stored_reply(row: dict[str, Any], replayed: bool = False) -> Reply:
    status = int(row["response_status"])
    content_type = "application/problem+json" if status >= 400 else "application/json"
    return Reply(
        json.loads(row["response_body"]), status, {"idempotent-replayed": "true"} if replayed else {}, content_type
    )


async def _batch_once_retried(db: Database, statements: list[Statement]) -> list[Any]:
    """The gateway has answered: a transient D1 failure here is retried once
    (safe: every statement is conditional on the part or key still pending)."""
    for attempt in range(SETTLE_ATTEMPTS):
        try:
            return await db.batch(statements)
        except TransientD1Error:
            if attempt + 1 >= SETTLE_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _apply(parts: list[dict[str, Any]], decisions: list[Decision]) -> list[tuple[dict[str, Any], Decision]]:
    """The parts the gateway decided, each updated with its decision (for the view)."""
    decided = [(p, d) for p, d in zip(parts, decisions, strict=True) if d.state != "in_transit"]
    for part, decision in decided:
        part.update(
            state=decision.state,
            outcome=decision.outcome,
            gateway_transaction_id=decision.transaction_id,
            gateway_error_code=decision.error_code,
        )
    return decided


async def _finish(
    rc: RequestContext,
    key: IdempotencyKey,
    refund: dict[str, Any],
    parts: list[dict[str, Any]],
    decisions: list[Decision],
) -> Reply:
    """Every decided part settled or returned, and the reply stored, in ONE batch:
    each part's movement (its state, the deposit's `refunded_cents`, its transfer)
    is whole inside it, so any number of parts costs one round trip."""
    now_ms = rc.clock.now_ms()
    decided = _apply(parts, decisions)
    statements = [s for part, decision in decided for s in resolve_statements(part, decision, now_ms)]
    try:
        results = await _batch_once_retried(
            rc.db, [*statements, _complete(key, *_reply_for(refund_view(refund, parts)))]
        )
    except (UniqueViolation, TriggerAbort) as exc:
        if not decided:
            raise
        # A part was resolved meanwhile (a retry resuming this request, or the
        # resolver), or an "after" failure's retry met this batch's own work: it
        # wrote nothing. Each part then goes alone, so the others still land.
        logs.info("wallet_refund_parts_raced", request_id=rc.request_id, error=type(exc).__name__)
        return await _finish_each(rc, key, int(refund["id"]), decided, now_ms)
    if results[-1].rows:
        return _stored_reply(results[-1].rows[0])
    return await key.replay(rc.db)


async def _finish_each(
    rc: RequestContext, key: IdempotencyKey, refund_id: int, decided: list[tuple[dict[str, Any], Decision]], now_ms: int
) -> Reply:
    """After a race: one batch per part (the loser of each race changes nothing),
    then the reply from the refund as it now stands."""
    for part, decision in decided:
        try:
            await _batch_once_retried(rc.db, resolve_statements(part, decision, now_ms))
        except (UniqueViolation, TriggerAbort) as exc:
            logs.info(
                "wallet_refund_part_raced", request_id=rc.request_id, part_id=part["id"], error=type(exc).__name__
            )
    refund, parts, _wallet = await read_refund(rc.db, key.user_id, refund_id)
    results = await _batch_once_retried(rc.db, [_complete(key, *_reply_for(refund_view(refund, parts)))])
    if results[-1].rows:
        return _stored_reply(results[-1].rows[0])
    return await key.replay(rc.db)


def _resumable(key: IdempotencyKey, row: dict[str, Any]) -> bool:
    """A key still pending for this very request: its request died after reserving."""
    return row["state"] == "pending" and row["request_sha256"] == key.request_sha256 and row["route"] == key.route


async def _resume(
    rc: RequestContext, key: IdempotencyKey, refund: dict[str, Any], parts: list[dict[str, Any]], wallet: int
) -> Reply:
    """A retry of a request whose key is still pending (it died after reserving)."""
    if key.now_ms - int(refund["created_at_ms"]) > RESUME_WINDOW_MS:
        # Too late to resend safely: the resolver owns what is still in transit.
        status, body = _reply_for(refund_view(refund, parts))
        body["wallet"]["available_cents"] = wallet
        return Reply(
            body,
            status,
            {"idempotent-replayed": "true"},
            "application/problem+json" if status >= 400 else "application/json",
        )
    decisions = [await send_part(rc, p, resent=True) if p["state"] == "in_transit" else IN_TRANSIT for p in parts]
    return await _finish(rc, key, refund, parts, decisions)


async def _resume_raced(rc: RequestContext, key: IdempotencyKey, row: dict[str, Any]) -> Reply:
    """A request that lost its reservation to a retry with the same key: resume
    what the key names (the refund read now; a rare path)."""
    note = json.loads(row["response_body"]) if row["response_body"] else {}
    refund_id = note.get("refund_id")
    if not isinstance(refund_id, str) or not refund_id.isdigit():
        return key.replay_row(row)
    refund, parts, wallet = await read_refund(rc.db, key.user_id, int(refund_id))
    return await _resume(rc, key, refund, parts, wallet)


async def create_refund(rc: RequestContext) -> Reply:
    body = await rc.parsed_body()
    settings = rc.settings
    if not (settings.anet_endpoint and settings.anet_login_id and settings.anet_transaction_key):
        raise Problem(500, "misconfigured", "Server misconfigured", "The payment gateway is not configured.")
    requested = await RequestKey.from_request(rc)
    since_ms = requested.now_ms - settings.refund_window_days * 86_400_000
    stored, state, candidates, pending, pending_parts = await users.with_caller(
        rc, _first_batch(users.caller_sub(rc), requested, since_ms)
    )
    key = requested.for_user(rc.user_id)
    wallet = int(state.rows[0]["wallet_cents"] or 0)
    if stored.rows:
        row = stored.rows[0]
        if _resumable(key, row) and pending.rows:
            return await _resume(rc, key, pending.rows[0], pending_parts.rows, wallet)
        return key.replay_row(row)
    if state.rows[0]["on_hold"]:
        raise chargebacks.hold_problem()
    wanted = body.get("amount_cents")
    if wallet <= 0:
        raise conflict("nothing_to_refund", "Your wallet holds no cash to refund.")
    if wanted is not None and wanted > wallet:
        raise Problem(
            409,
            "refund_exceeds_balance",
            "Conflict",
            f"Your wallet holds {wallet} cents; at most that can be refunded.",
            extra={"available_cents": wallet},
        )
    target = wanted if wanted is not None else wallet
    parts, planned, settling = await plan_parts(rc, candidates.rows, target)
    if planned < target and (wanted is not None or planned == 0):
        detail = f"{planned} cents can be refunded to your card now."
        if settling:
            detail += f" {settling} cents are in deposits the card network has not settled yet (usually within a day)."
        raise Problem(
            409,
            "refund_not_available",
            "Conflict",
            detail,
            extra={"refundable_now_cents": planned, "settling_cents": settling},
        )
    refund = {"id": new_id(), "amount_cents": planned, "parts": len(parts), "created_at_ms": key.now_ms}
    statements = [
        key.record_pending({"refund_id": str(refund["id"])}),
        sql(
            "INSERT INTO wallet_refunds (id, user_id, amount_cents, parts, created_at_ms) VALUES (?, ?, ?, ?, ?)",
            refund["id"],
            key.user_id,
            planned,
            len(parts),
            key.now_ms,
        ),
    ]
    for part in parts:
        statements += reserve_statements(
            part_id=part["id"],
            refund_id=refund["id"],
            user_id=key.user_id,
            payment_id=part["payment_id"],
            amount_cents=part["amount_cents"],
            now_ms=key.now_ms,
        )
    try:
        await rc.db.batch(statements)
    except UniqueViolation as exc:
        if not IdempotencyKey.is_key_conflict(exc):
            raise
        raced = await key.stored(rc.db)
        if raced is not None and _resumable(key, raced):
            return await _resume_raced(rc, key, raced)
        return key.replay_row(raced)
    except TriggerAbort as exc:
        if exc.code == "chargeback_hold":
            raise chargebacks.hold_problem() from None
        if exc.code not in ("insufficient_funds", "wallet_refund_part_invalid"):
            raise
        raise _raced() from None
    except CheckViolation:
        raise _raced() from None
    decisions = [await send_part(rc, part, resent=False) for part in parts]
    return await _finish(rc, key, refund, parts, decisions)


def _raced() -> Problem:
    return Problem(
        409,
        "refund_conflict",
        "Conflict",
        "Your wallet or deposits changed meanwhile; nothing was refunded. Retry.",
        headers={"retry-after": "1"},
    )


_REFUND_PROBLEMS = {
    403: ("chargeback_hold",),
    409: (
        "nothing_to_refund",
        "refund_exceeds_balance",
        "refund_not_available",
        "refund_conflict",
        "request_in_progress",
        "idempotency_conflict",
    ),
    422: ("idempotency_key_reused",),
    502: ("refund_failed",),
    503: ("refund_gateway_unavailable",),
}

ROUTES = [
    Route(
        "POST",
        "/v1/wallet/refunds",
        create_refund,
        "Refund unused wallet cash to the card(s) it came from (newest settled deposits first)",
        primary=True,
        caller_batch=True,
        body=REFUND_BODY,
        idempotency_key=True,
        responses={201: "WalletRefundResult", 202: "WalletRefundResult"},
        problems=(403, 409, 422, 502, 503),
        problem_codes=_REFUND_PROBLEMS,
        tag="wallet",
    ),
    Route(
        "GET",
        "/v1/wallet/refunds",
        list_refunds,
        "Your refunds of unused funds, newest first",
        primary=True,
        query=LIST_QUERY,
        responses={200: "WalletRefundPage"},
        tag="wallet",
    ),
    Route(
        "GET",
        "/v1/wallet/refunds/{refund_id:id}",
        get_refund,
        "One of your refunds of unused funds, with its per-deposit parts",
        primary=True,
        responses={200: "WalletRefund"},
        problems=(404,),
        tag="wallet",
    ),
]
