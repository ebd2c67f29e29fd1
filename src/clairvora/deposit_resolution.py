"""Deposits the gateway's answer never reached: found again at Authorize.Net.

Two states leave a card deposit waiting for the gateway's word (payments.py):
- claimed, never settled: `pending` with no transaction id. The claim batch
  committed, then the request died: before the gateway call (it was never
  sent), or after it, with the answer lost (the settle batch failed twice);
- `unknown`: the call timed out, its answer was unreadable, it was refused as a
  duplicate, or a retry recovered a dead claim.
The signed authcapture webhook resolves a charge that happened, but a request
that never charged anything gets no webhook, so without this module such a
payment stays `pending`/`unknown` for ever (and a dead claim's key answers 409
`request_in_progress` for its whole life).

`resolve_stale_deposits` (the cron calls it every minute) takes such payments
once the Accept.js token they were sent with can no longer charge anything
(RESOLVE_AFTER_MS after the claim: the token's 15 minutes plus a margin for
the gateway's lists to show a transaction) and looks each up at the gateway by
its invoiceNumber, which is the payment id. The reporting API has no search by
invoice (anet.py), so one run reads the lists once for all of them, newest
first: the unsettled transactions page by page until a page reaches back past
the oldest claim, then the batches settled since the oldest claim and each
batch's transactions (unsettled first, so a transaction settling meanwhile is
seen in one list or the other; newest first, so one submitted meanwhile only
repeats an item; pages are numbers, not cursors, so if a batch settled while
more than one unsettled page was read the search counts as incomplete). Then,
per payment, one batch:
- one approved transaction of our amount (capturedPendingSettlement,
  settledSuccessfully): approved and credited (deposit_outcomes.credit_statements:
  the credit's unique key and the webhook's never credit twice);
- held for review (FDSPendingReview, FDSAuthorizedPendingReview): `pending` with
  its transaction id, for the fraud webhook to decide;
- voided: `voided` (never credited); declined: `declined`; failed at the
  gateway (generalError, communicationError, expired, failedReview): `error`;
- no transaction at all, and every list was read to the end: `error`, reason
  `not_processed`: the gateway never charged it (never sent, or refused before
  it became a transaction). Safe: the token has expired, so nothing can charge
  it any more, and a capture webhook would still credit an `error` payment.
Anything else (an amount that differs, two approved transactions, a status we
do not know, lists cut short by the run's budget) is left as it is for the next
run; such payments are put back at the end of the queue (their updated_at_ms
moves) and stay in the ledger check (reconcile.py) until resolved.

The claim's Idempotency-Key, if still `pending` (the request died), gets the
final reply in the same batch, so a retry with it replays the outcome.
Every write is conditional on the payment still waiting: a status change on
its status and updated_at_ms as read, a credit on the payment not being
credited or closed meanwhile (the credit's unique key, the payment-reference
trigger). So a racing webhook, deposit retry or second cron run wins cleanly
and the loser's batch changes nothing.
"""

from dataclasses import dataclass
from typing import Any

from . import anet, logs
from .config import Settings
from .db import Database, Statement, TriggerAbort, UniqueViolation, sql
from .deposit_outcomes import complete_claim_of_payment, credit_statements, reply_for

# A claim older than this can no longer be charged: the Accept.js token it
# carried has expired. The margin covers the gateway's lists catching up.
RESOLVE_AFTER_MS = anet.ACCEPT_TOKEN_LIFE_S * 1000 + 5 * 60_000
# Older claims are left to the operator: the settled batches of one lookup span
# at most 31 days (anet.MAX_BATCH_RANGE_DAYS).
MAX_AGE_MS = 30 * 86_400_000
# Our clock and the gateway's may differ; the lists are read this much further back.
CLOCK_SLACK_MS = 10 * 60_000
MAX_PAYMENTS_PER_RUN = 10
MAX_GATEWAY_CALLS_PER_RUN = 8  # outbound fetches (a Worker invocation allows 50 on the free plan)
D1_CALL_CEILING = 45  # stop before D1's 50 calls per invocation, which the cron shares

APPROVED = frozenset({"capturedPendingSettlement", "settledSuccessfully"})
HELD = frozenset({"FDSPendingReview", "FDSAuthorizedPendingReview"})
VOIDED = frozenset({"voided"})
DECLINED = frozenset({"declined"})
FAILED = frozenset({"generalError", "communicationError", "expired", "failedReview"})
# A refund of our charge is a transaction of its own that may repeat the invoice.
REFUNDS = frozenset({"refundSettledSuccessfully", "refundPendingSettlement"})

_WAITING = """
SELECT id, user_id, amount_cents, status, gateway_transaction_id, created_at_ms, updated_at_ms FROM (
  SELECT * FROM payments
  WHERE status = 'pending' AND updated_at_ms < ? AND gateway_transaction_id IS NULL AND created_at_ms >= ?
  UNION ALL
  SELECT * FROM payments WHERE status = 'unknown' AND updated_at_ms < ? AND created_at_ms >= ?
) ORDER BY updated_at_ms, id LIMIT ?"""


@dataclass(frozen=True, slots=True)
class Search:
    """What one run read at the gateway: our invoices' transactions, and whether
    every list was read to the end (only then can "not found" be concluded)."""

    found: dict[str, list[anet.TransactionSummary]]
    complete: bool


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: str  # anet.Outcome of the reply, or "undecided"
    status: str | None = None  # the payment's new status
    transaction: anet.TransactionSummary | None = None
    reason: str = ""


async def find_invoices(settings: Settings, invoices: set[str], since_ms: int, now_ms: int) -> Search:
    """Our invoices' transactions in the gateway's lists of everything submitted
    since `since_ms`, within MAX_GATEWAY_CALLS_PER_RUN calls."""
    assert settings.anet_login_id and settings.anet_transaction_key
    auth = {"login_id": settings.anet_login_id, "transaction_key": settings.anet_transaction_key}
    found: dict[str, list[anet.TransactionSummary]] = {}
    calls = 0

    async def read(body: dict[str, Any]) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return await anet.report(
            endpoint=settings.anet_endpoint, timeout_ms=settings.anet_timeout_ms, request_body=body
        )

    def keep(items: list[anet.TransactionSummary]) -> None:
        for item in items:
            if item.invoice_number is not None and item.invoice_number in invoices:
                found.setdefault(item.invoice_number, []).append(item)

    # 1. Unsettled, newest first: stop at a short page or one that reaches past since_ms.
    page, unsettled_done = 1, False
    while calls < MAX_GATEWAY_CALLS_PER_RUN:
        items = anet.summaries(await read(anet.unsettled_list_request(**auth, page=page)))
        keep(items)
        times = [i.submit_time_ms for i in items if i.submit_time_ms is not None]
        if len(items) < anet.REPORT_PAGE_SIZE or (times and min(times) < since_ms):
            unsettled_done = True
            break
        page += 1
    if not unsettled_done:
        return Search(found, complete=False)

    # 2. Batches settled since since_ms, and their transactions.
    last_ms = now_ms + CLOCK_SLACK_MS
    first_ms = max(since_ms, last_ms - anet.MAX_BATCH_RANGE_DAYS * 86_400_000 + 60_000)
    if calls >= MAX_GATEWAY_CALLS_PER_RUN:
        return Search(found, complete=False)
    batches = anet.settled_batches(
        await read(anet.settled_batch_list_request(**auth, first_ms=first_ms, last_ms=last_ms))
    )
    if page > 1 and any(at is None or at >= now_ms - CLOCK_SLACK_MS for _id, at in batches):
        # A batch settled while the unsettled pages were read: the pages shifted
        # (page numbers, not cursors), so one transaction may have been skipped.
        return Search(found, complete=False)
    for batch_id, _at in batches:
        page = 1
        while True:
            if calls >= MAX_GATEWAY_CALLS_PER_RUN:
                return Search(found, complete=False)
            items = anet.summaries(await read(anet.transaction_list_request(**auth, batch_id=batch_id, page=page)))
            keep(items)
            if len(items) < anet.REPORT_PAGE_SIZE:
                break
            page += 1
    return Search(found, complete=True)


def decide(payment: dict[str, Any], transactions: list[anet.TransactionSummary], complete: bool) -> Decision:
    """What the gateway's transactions for one payment's invoice say about it (pure)."""
    ours = [t for t in transactions if t.status not in REFUNDS]
    approved = [t for t in ours if t.status in APPROVED]
    if len(approved) > 1:
        return Decision("undecided", reason="two approved transactions for one invoice")
    if approved:
        if approved[0].amount_cents != payment["amount_cents"]:
            return Decision("undecided", reason="approved amount differs")
        return Decision("approved", "approved", approved[0])
    for statuses, outcome, status in (
        (HELD, "held", "pending"),
        (VOIDED, "voided", "voided"),
        (DECLINED, "declined", "declined"),
        (FAILED, "error", "error"),
    ):
        match = [t for t in ours if t.status in statuses]
        if match:
            return Decision(outcome, status, match[0])
    if ours:
        return Decision("undecided", reason=f"transaction status {ours[0].status[:40]}")
    if not complete:
        return Decision("undecided", reason="the gateway's lists were not read to the end")
    return Decision("not_processed", "error")


# The answer a live request would have given for each decision ("voided": never
# credited, nothing charged; not an answer a live request gives).
_REPLY_OUTCOME: dict[str, anet.Outcome] = {
    "approved": "approved",
    "held": "held",
    "voided": "error",
    "declined": "declined",
    "error": "error",
    "not_processed": "not_processed",
}


def _reply(payment: dict[str, Any], decision: Decision) -> tuple[int, dict[str, Any]]:
    """The deposit request's final reply, as payments.py would have answered it."""
    trans_id = decision.transaction.trans_id if decision.transaction else payment["gateway_transaction_id"]
    view = {**payment, "status": decision.status, "gateway_transaction_id": trans_id}
    return reply_for(view, anet.GatewayResult(_REPLY_OUTCOME[decision.outcome], trans_id))


_RESPONSE_CODE = {"approved": "1", "declined": "2", "held": "4"}


def _statements(payment: dict[str, Any], decision: Decision, now_ms: int) -> list[Statement]:
    assert decision.status is not None
    trans_id = decision.transaction.trans_id if decision.transaction else None
    status, body = _reply(payment, decision)
    if decision.outcome == "approved":
        assert trans_id is not None
        changes = credit_statements(
            payment_id=payment["id"],
            user_id=payment["user_id"],
            amount_cents=payment["amount_cents"],
            transaction_id=trans_id,
            response_code="1",
            now_ms=now_ms,
        )
    else:
        # A transaction id another payment holds already (UNIQUE) is not taken.
        changes = [
            sql(
                """UPDATE payments
                   SET status = ?, updated_at_ms = ?,
                       gateway_response_code = coalesce(?, gateway_response_code),
                       gateway_transaction_id = coalesce(gateway_transaction_id, (SELECT ? WHERE ? IS NOT NULL
                         AND NOT EXISTS (SELECT 1 FROM payments WHERE gateway_transaction_id = ? AND id <> ?)))
                   WHERE id = ? AND user_id = ? AND status = ? AND updated_at_ms = ?""",
                decision.status,
                now_ms,
                _RESPONSE_CODE.get(decision.outcome),
                trans_id,
                trans_id,
                trans_id,
                payment["id"],
                payment["id"],
                payment["user_id"],
                payment["status"],
                payment["updated_at_ms"],
            )
        ]
    return [
        *changes,
        complete_claim_of_payment(
            payment_id=payment["id"],
            user_id=payment["user_id"],
            status=status,
            body=body,
            if_status=decision.status,
            if_updated_at_ms=now_ms,
        ),
    ]


def _requeue(payment: dict[str, Any], now_ms: int) -> Statement:
    """Undecided: to the back of the queue, looked up again a grace period later."""
    return sql(
        "UPDATE payments SET updated_at_ms = ? WHERE id = ? AND user_id = ? AND status = ? AND updated_at_ms = ?",
        now_ms,
        payment["id"],
        payment["user_id"],
        payment["status"],
        payment["updated_at_ms"],
    )


async def resolve_stale_deposits(db: Database, settings: Settings, now_ms: int) -> dict[str, int]:
    """The cron job: resolve up to MAX_PAYMENTS_PER_RUN waiting deposits older
    than RESOLVE_AFTER_MS by looking them up at the gateway. Counts for the cron log."""
    if not (settings.anet_endpoint and settings.anet_login_id and settings.anet_transaction_key):
        return {}
    waiting = await db.all(
        sql(
            _WAITING,
            now_ms - RESOLVE_AFTER_MS,
            now_ms - MAX_AGE_MS,
            now_ms - RESOLVE_AFTER_MS,
            now_ms - MAX_AGE_MS,
            MAX_PAYMENTS_PER_RUN,
        )
    )
    payments = waiting.rows
    counts = {"deposits_looked_up": 0, "deposits_resolved": 0, "deposits_undecided": 0}
    if not payments:
        return counts
    since_ms = min(int(p["created_at_ms"]) for p in payments) - CLOCK_SLACK_MS
    try:
        search = await find_invoices(settings, {str(p["id"]) for p in payments}, since_ms, now_ms)
    except anet.ReportingError as exc:
        logs.warning("deposit_lookup_failed", error=str(exc)[:200], waiting=len(payments))
        return {**counts, "deposit_lookup_failed": 1}
    counts["deposits_looked_up"] = len(payments)
    for payment in payments:
        if db.counters.calls >= D1_CALL_CEILING:
            break
        decision = decide(payment, search.found.get(str(payment["id"]), []), search.complete)
        if decision.outcome == "undecided":
            counts["deposits_undecided"] += 1
            logs.warning("deposit_lookup_undecided", payment_id=payment["id"], reason=decision.reason)
            await db.run(_requeue(payment, now_ms))
            continue
        try:
            await db.batch(_statements(payment, decision, now_ms))
        except (UniqueViolation, TriggerAbort) as exc:
            # The payment moved meanwhile (credited by the webhook, settled by a
            # retry): the batch rolled back; the payment is resolved or the next
            # run reads it again.
            logs.info("deposit_lookup_raced", payment_id=payment["id"], error=type(exc).__name__)
            continue
        counts["deposits_resolved"] += 1
        logs.info(
            "deposit_resolved",
            payment_id=payment["id"],
            outcome=decision.outcome,
            status=decision.status,
            gateway_transaction_id=decision.transaction.trans_id if decision.transaction else None,
        )
    return counts
