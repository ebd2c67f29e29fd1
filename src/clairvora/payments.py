"""Card deposits: `POST /v1/wallet/deposits` charges an Accept.js token
through Authorize.Net and credits the wallet.

Two D1 round trips around one gateway call:
  1. claim: the caller lookup, the Idempotency-Key (state 'pending') + the
     payment row ('pending', our id doubles as the gateway's invoiceNumber), one
     batch (a retry's key is read in it instead, and answered from it);
  2. the gateway call (`anet.create_transaction`);
  3. settle, one batch: the payment's outcome + (approved only) the ledger
     credit (wallet +, gateway clearing -) + the stored reply of the key.

Outcomes: approved 201; held for review 202 (`pending`, credited when the
gateway's webhook approves it); declined 402; gateway error 502 (the gateway
answered and charged nothing: payment `error`); no readable answer
(timeout 504, transport failure 502): payment `unknown`.
Two refusals are deterministic, so they are 4xx, never 5xx:
- the Accept.js token was already used or has expired (E00114/E00115): 422
  `payment_token_invalid`, payment `error` (no transaction exists for this
  delivery); the client gets a new token from Accept.js;
- duplicate (error 11): our invoiceNumber is the payment id, unique per
  attempt, so the gateway refused a second delivery of THIS deposit's request,
  and whether money moved depends on the first delivery, which the gateway
  names (its transId) but does not fully describe (an authCode is also given to
  a transaction held for review). 409 `payment_duplicate`, payment `unknown`
  with that transId, resolved by the authcapture webhook like a timeout.
  Which check the gateway runs first for a second delivery (the spent token's
  E00114, or the duplicate's 11) is unconfirmed: if E00114, such a payment is
  `error` although the first delivery charged, so the capture webhook credits
  an `error` payment too (the gateway's signed word that the money moved).

An `unknown` payment is resolved later by the signed
`net.authorize.payment.authcapture.created` webhook (webhooks.py), matched
on invoiceNumber = payment id: it approves and credits the payment (the
credit's transfer key `deposit:payment:<id>` and a UNIQUE index make a second
credit impossible). The key's stored reply stays the 504: retrying with the
same key replays it and never calls the gateway again (so never charges twice);
the client sees the credit in its wallet when it lands.

If D1 fails while settling, the settle batch is retried once (safe: all of it is
conditional on the payment and key still being pending, the credit key is
unique). If the request dies between claiming and settling, the key stays
`pending` (a retry gets 409); once the claim is older than the gateway timeout
plus a minute, a retry with the same key settles the payment as `unknown` and
gets the 504, and the webhook resolves it as above.

A claim whose gateway call was never sent (the Worker died between the claim
batch and the fetch) gets no webhook, and neither does a timeout the gateway
never processed: such a payment would stay `pending`/`unknown` for ever. The
cron's `deposit_resolution.resolve_stale_deposits` looks every such payment up
at the gateway by its invoiceNumber once the Accept.js token can no longer
charge anything, and settles it (and its key, if still pending) with what the
gateway says, or as `not_processed` (payment `error`, 502
`payment_not_processed`: nothing was charged) when the gateway has no
transaction for it. Card data is never stored or logged: only the gateway's
transaction id, amount and status.

The card-testing defence (migration 0060: a guard in the claim batch, the
attempt's outcome and any cool-off in the settle batch; 429 `deposit_cooloff`)
lives in deposit_attempts.py; what each gateway outcome writes and answers (the
settle statements, the credit, the reply) in deposit_outcomes.py, shared with
the webhook and the cron's resolution.
"""

import json
from typing import Any

from . import anet, config, limits, logs, users
from .db import Statement, TransientD1Error, TriggerAbort, UniqueViolation, sql
from .deposit_attempts import (
    STALE_CLAIM_MARGIN_MS,
    attempt_ip,
    attempt_settled_statements,
    attempt_statement,
    cooloff_refusal,
    is_failure,
)
from .deposit_outcomes import STATUS_OF_OUTCOME, complete_with_wallet, reply_for, settle_statements
from .errors import Problem, bad_request
from .idempotency import IdempotencyKey, RequestKey
from .ids import new_id
from .requests import RequestContext
from .responses import Reply, encode_json
from .routing import Route
from .validation import Int, Obj, Str

DEPOSIT_BODY = Obj(
    {
        "amount_cents": Int(
            low=config.DEPOSIT_MIN_CENTS,
            high=config.DEPOSIT_MAX_CENTS,
            description="within the configured DEPOSIT_MIN_CENTS..DEPOSIT_MAX_CENTS",
        ),
        "opaque_data": Obj(
            {
                "data_descriptor": Str(min_len=1, max_len=64, description="Accept.js dataDescriptor"),
                "data_value": Str(min_len=1, max_len=8192, description="Accept.js dataValue (single use)"),
            },
            required=("data_descriptor", "data_value"),
        ),
    },
    required=("amount_cents", "opaque_data"),
)

SETTLE_ATTEMPTS = 2


async def create_deposit(rc: RequestContext) -> Reply:
    body = await rc.parsed_body()
    amount = body["amount_cents"]
    low, high = rc.settings.deposit_min_cents, rc.settings.deposit_max_cents
    if not low <= amount <= high:
        raise bad_request(f"'amount_cents' must be between {low} and {high}.", "amount_cents")
    settings = rc.settings
    if not (settings.anet_endpoint and settings.anet_login_id and settings.anet_transaction_key):
        raise Problem(500, "misconfigured", "Server misconfigured", "The payment gateway is not configured.")
    requested = await RequestKey.from_request(rc)
    ip = attempt_ip(rc)
    payment = {
        "id": new_id(),
        "amount_cents": amount,
        "status": "pending",
        "gateway_transaction_id": None,
        "created_at_ms": requested.now_ms,
    }

    # 1. Claim the key and record the attempt before any money can move, in ONE
    # batch with the caller lookup (Route(caller_batch=True)): the claim names the
    # caller by its Clerk sub, and yields to a key already there (a retry) instead
    # of failing, so the same batch also reads that key for the replay.
    sub = users.caller_sub(rc)
    note = {"payment_id": str(payment["id"])}
    try:
        _key, claimed, _attempt, stored, stale = await users.with_caller(
            rc,
            [
                requested.claim_pending(sub, note),
                sql(
                    """INSERT INTO payments (id, user_id, amount_cents, status, created_at_ms, updated_at_ms)
                   SELECT ?, k.user_id, ?, 'pending', ?, ? FROM idempotency_keys k
                   WHERE k.user_id = (SELECT id FROM users WHERE clerk_user_id = ?) AND k.idempotency_key = ?
                     AND k.state = 'pending' AND k.response_body = ?""",
                    payment["id"],
                    amount,
                    requested.now_ms,
                    requested.now_ms,
                    sub,
                    requested.key,
                    encode_json(note),
                ),
                attempt_statement(settings, payment_id=payment["id"], ip=ip, now_ms=requested.now_ms),
                requested.stored(sub),
                # The payment of a key still pending, for _replay_or_recover.
                sql(
                    """SELECT p.id, p.amount_cents, p.status, p.gateway_transaction_id, p.created_at_ms
                   FROM idempotency_keys k JOIN payments p
                     ON p.id = CAST(json_extract(k.response_body, '$.payment_id') AS INTEGER) AND p.user_id = k.user_id
                   WHERE k.user_id = (SELECT id FROM users WHERE clerk_user_id = ?) AND k.idempotency_key = ?
                     AND k.state = 'pending' AND json_valid(k.response_body)""",
                    sub,
                    requested.key,
                ),
            ],
        )
    except TriggerAbort as exc:
        # with_caller loaded the caller before handing the refusal on.
        if exc.code == "deposit_cooloff":
            raise await cooloff_refusal(rc, rc.user_id, ip, requested.now_ms) from None
        # The spending limits (limits.py, migrations/0071): the claim's INSERT was
        # refused, so the whole batch (key included) wrote nothing.
        if exc.code not in limits.CLAIM_REFUSALS:
            raise
        raise await limits.refusal_for(rc.db, exc.code, rc.user_id, amount, requested.now_ms) from None
    key = requested.for_user(rc.user_id)
    if claimed.changes == 0:
        return await _replay_or_recover(rc, key, stored.rows, stale.rows)

    # 2. The gateway. The token is passed through, never stored or logged.
    request_body = anet.auth_capture_request(
        login_id=settings.anet_login_id,
        transaction_key=settings.anet_transaction_key,
        amount_cents=amount,
        data_descriptor=body["opaque_data"]["data_descriptor"],
        data_value=body["opaque_data"]["data_value"],
        invoice_number=str(payment["id"]),
        customer_id=str(key.user_id),
        ref_id=str(payment["id"]),
    )
    result = await anet.create_transaction(
        endpoint=settings.anet_endpoint, timeout_ms=settings.anet_timeout_ms, request_body=request_body
    )
    payment["status"] = STATUS_OF_OUTCOME[result.outcome]
    payment["gateway_transaction_id"] = result.transaction_id
    logs.info(
        "deposit_gateway_result",
        request_id=rc.request_id,
        payment_id=payment["id"],
        outcome=result.outcome,
        response_code=result.response_code,
        error_code=result.error_code,
    )

    # 3. Settle: outcome, credit (approved only) and the stored reply in ONE batch.
    status, reply_body = reply_for(payment, result)
    attempt = attempt_settled_statements(
        settings, payment_id=payment["id"], user_id=key.user_id, ip=ip, failed=is_failure(result), now_ms=key.now_ms
    )
    return await _settle(rc, key, payment, result, status, reply_body, attempt)


async def _settle(
    rc: RequestContext,
    key: IdempotencyKey,
    payment: dict[str, Any],
    result: anet.GatewayResult,
    status: int,
    reply_body: dict[str, Any],
    attempt: list[Statement],
) -> Reply:
    """The settle batch, retried once on a transient D1 error: the card may
    already be charged, so giving up here would leave the payment to the
    recovery path. Retrying is safe: every statement is conditional on the
    payment/key still being pending, and the credit's key is unique."""
    statements = [*attempt, *settle_statements(key, payment, result, status, reply_body)]
    failures = 0
    while True:
        try:
            results = await rc.db.batch(statements)
            break
        except TransientD1Error:
            failures += 1
            if failures >= SETTLE_ATTEMPTS:
                logs.error(
                    "deposit_settle_failed", request_id=rc.request_id, payment_id=payment["id"], outcome=result.outcome
                )
                raise
        except UniqueViolation as exc:
            # Already credited: by the authcapture webhook while we waited on the
            # gateway, or by our own first attempt whose answer D1 lost. Store
            # the reply without crediting again.
            reduced = [*attempt, complete_with_wallet(key, status, reply_body)]
            if len(statements) == len(reduced) or not any(c.startswith("transfers.") for c in exc.columns):
                raise
            statements = reduced
    stored = results[-1].rows
    if not stored:
        # The key is done already (our lost first attempt completed it, or a
        # retry recovered it): its stored reply is the answer.
        return await key.replay(rc.db)
    return _final_reply(status, stored[0]["response_body"])


async def _replay_or_recover(
    rc: RequestContext, key: IdempotencyKey, stored: list[dict[str, Any]], pending_payment: list[dict[str, Any]]
) -> Reply:
    """A retry, answered from the key and (while it is pending) its payment, both
    read by the claim batch. A key still pending long after the gateway's timeout
    belongs to a request that died between charging and settling: settle it now
    as `unknown` (504), for the authcapture webhook to resolve, instead of
    answering 409 for the key's 24-hour life."""
    row = stored[0] if stored else None
    if row is None or row["state"] != "pending" or row["request_sha256"] != key.request_sha256:
        return key.replay_row(row)
    stale_before_ms = key.now_ms - rc.settings.anet_timeout_ms - STALE_CLAIM_MARGIN_MS
    payment = pending_payment[0] if pending_payment else None
    if payment is None or payment["status"] != "pending" or payment["created_at_ms"] >= stale_before_ms:
        return key.replay_row(row)
    payment = {**payment, "status": "unknown"}
    status, reply_body = reply_for(payment, anet.GatewayResult("unknown", timed_out=True))
    results = await rc.db.batch(
        [
            sql(
                """UPDATE payments SET status = 'unknown', updated_at_ms = ?
               WHERE id = ? AND status = 'pending' AND created_at_ms < ?""",
                key.now_ms,
                payment["id"],
                stale_before_ms,
            ),
            sql(
                """UPDATE idempotency_keys
               SET state = 'done', response_status = ?,
                   response_body = json_set(?, '$.wallet.available_cents',
                     (SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet'))
               WHERE user_id = ? AND idempotency_key = ? AND state = 'pending' AND created_at_ms < ?
               RETURNING response_body""",
                status,
                encode_json(reply_body),
                key.user_id,
                key.user_id,
                key.key,
                stale_before_ms,
            ),
        ]
    )
    if not results[-1].rows:
        return await key.replay(rc.db)
    logs.warning("deposit_claim_recovered", request_id=rc.request_id, payment_id=payment["id"])
    return _final_reply(status, results[-1].rows[0]["response_body"])


def _final_reply(status: int, response_body: str) -> Reply:
    content_type = "application/problem+json" if status >= 400 else "application/json"
    return Reply(json.loads(response_body), status, {}, content_type)


SCHEMAS: dict[str, Any] = {
    "Deposit": {
        "type": "object",
        "required": ["id", "amount_cents", "currency", "status", "gateway_transaction_id", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "amount_cents": {"type": "integer"},
            "currency": {"type": "string", "enum": ["USD"]},
            "status": {
                "type": "string",
                "enum": ["pending", "approved", "declined", "error", "unknown", "refunded", "voided"],
            },
            "gateway_transaction_id": {"type": ["string", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "DepositResult": {
        "type": "object",
        "required": ["deposit", "wallet"],
        "properties": {
            "deposit": {"$ref": "#/components/schemas/Deposit"},
            "wallet": {"$ref": "#/components/schemas/Wallet"},
        },
    },
}

ROUTES = [
    Route(
        "POST",
        "/v1/wallet/deposits",
        create_deposit,
        "Charge a card (Accept.js opaque token) through Authorize.Net and credit the wallet",
        primary=True,
        body=DEPOSIT_BODY,
        idempotency_key=True,
        caller_batch=True,
        responses={201: "DepositResult", 202: "DepositResult"},
        problems=(402, 403, 409, 422, 429, 502, 504),
        problem_codes={
            403: ("self_excluded", "chargeback_hold"),
            429: ("deposit_cooloff",),
            402: ("payment_declined",),
            409: ("payment_duplicate", "request_in_progress", "idempotency_conflict"),
            422: ("payment_token_invalid", "idempotency_key_reused"),
            502: ("payment_gateway_error", "payment_gateway_unavailable", "payment_not_processed"),
            504: ("payment_gateway_timeout",),
        },
        tag="wallet",
    ),
]
