"""Reconciliation: every ledger invariant, checked against what D1 holds.

The triggers refuse a violating write; this proves, after the fact, that the
data still satisfies every invariant (a guard against a missed code path, a
manual fix gone wrong, or a migration bug). All checks are SELECTs sent in ONE
batch (one D1 round trip). They scan the money tables, so this is an admin
and test tool (`GET /v1/admin/ledger/check`, and the test suite's session-end
check), not something to put on a hot path.

Each check selects up to SAMPLE offending ids: none means the check holds.
Beside the invariants, the report lists the payments still awaiting the
gateway's word, by state: `held_for_review` (`pending` with the gateway's
transaction id; the fraud webhook decides), `claimed_not_settled` (`pending`
without one: the claim committed and the request died before its answer was
recorded, maybe before the gateway call was even sent) and `unknown` (a
timeout, an unreadable answer, a duplicate, a recovered claim). Not violations:
the cron's gateway lookup (deposit_resolution.py) resolves the last two once
the Accept.js token has expired. `lookup_overdue` counts and samples those
older than that (deposit_resolution.RESOLVE_AFTER_MS) and still waiting: the
cron job is not running, the gateway's lists cannot be read, or the lookup
could not decide (the logs say why); an operator reconciles those by hand.

The promo invariants (promo_checks.py) run in the same batch: promo credit
never below zero, never cashed out, in step with its grants, spent only by
charges, expired on time, and the promotions account reconciled.

`deposit_cooloffs` lists the card-testing cool-offs in force (deposit_attempts.py,
migration 0060): users and client IPs whose declined or errored deposits
reached the threshold, with the failures counted, start and end; the newest
COOLOFF_SAMPLE of them, and how many there are. Not a violation either.
"""

import json
from typing import Any

from . import card_checks, payout_checks, promo_checks
from .clock import Clock, rfc3339
from .db import Database, sql
from .deposit_resolution import RESOLVE_AFTER_MS
from .periods import CLOSED_THROUGH, OPEN_SINCE_MS, OPEN_TRANSFER_IDS, open_record_ids, open_records
from .requests import RequestContext
from .responses import Reply
from .routing import Route

SAMPLE = 5
COOLOFF_SAMPLE = 50

_ACTIVE_COOLOFFS = """
SELECT (SELECT count(*) FROM deposit_cooloffs WHERE until_ms > ?) AS n,
       (SELECT json_group_array(json_object('scope', scope, 'subject', subject, 'failures', failures,
                                            'started_at_ms', started_at_ms, 'until_ms', until_ms, 'trips', trips))
        FROM (SELECT * FROM deposit_cooloffs WHERE until_ms > ? ORDER BY started_at_ms DESC LIMIT ?)) AS items"""

# The entries of the open period: after the closed history (periods.py), whose
# entries are in R2 and whose end state is each account's row in
# account_closings. The checks start there, so their cost follows the open
# period, not all history.
_OPEN = f"e.id > {CLOSED_THROUGH}"
# The payments of the open period: named by one of its transfers, or still waiting
# for the gateway (no credit yet), and with no movement in R2 (a payment whose credit
# or reversal went to R2 with a closed period was proved then).
# ... or changed since the open period began to a state that has a credit (an approved
# payment whose credit is missing: no transfer names it), through payments_by_status.
_PAYMENT_WAITING = (
    "SELECT id FROM payments WHERE status IN ('pending', 'unknown') UNION "  # noqa: S608 - constant
    f"SELECT id FROM payments WHERE status IN ('approved', 'refunded', 'voided') AND updated_at_ms >= {OPEN_SINCE_MS}"
)
_PAYMENT_OPEN = open_records("payment", "p.id", _PAYMENT_WAITING)
# The movements those payments' checks sum: of the same payments only (not of every
# payment ever, as transfers stay in D1).
_PAYMENT_IDS = open_record_ids("payment", _PAYMENT_WAITING)

# (name, what holds when no row comes back, SQL returning offending ids as `id`)
CHECKS: tuple[tuple[str, str, str], ...] = (
    (
        "transfers_balanced_and_posted",
        "every transfer of the open period is posted and has two or more entries summing to zero",
        f"""SELECT t.id AS id FROM transfers t JOIN ledger_entries e ON e.transfer_id = t.id
        WHERE t.id IN {OPEN_TRANSFER_IDS}
        GROUP BY t.id
        HAVING t.posted <> 1 OR count(e.id) < 2 OR sum(e.amount_cents) <> 0
        LIMIT 5""",  # noqa: S608 - constant fragments
    ),
    (
        "balances_equal_sum_of_entries",
        "each account's balance equals its closing balance plus the sum of its open entries",
        f"""SELECT a.id AS id FROM accounts a
        LEFT JOIN account_closings c ON c.account_id = a.id
        LEFT JOIN (SELECT e.account_id, sum(e.amount_cents) AS total FROM ledger_entries e WHERE {_OPEN}
                   GROUP BY e.account_id) s ON s.account_id = a.id
        WHERE a.balance_cents <> coalesce(c.balance_cents, 0) + coalesce(s.total, 0)
        LIMIT 5""",  # noqa: S608 - constant fragments
    ),
    (
        "balances_equal_last_balance_after",
        "each account's balance equals its last entry's balance_after (or its closing balance)",
        """SELECT a.id AS id FROM accounts a
        LEFT JOIN account_closings c ON c.account_id = a.id
        LEFT JOIN ledger_entries e ON e.account_id = a.id AND e.sequence = a.last_sequence
        WHERE a.last_sequence < coalesce(c.sequence, 0)
           OR (a.last_sequence = coalesce(c.sequence, 0) AND a.balance_cents <> coalesce(c.balance_cents, 0))
           OR (a.last_sequence > coalesce(c.sequence, 0) AND (e.id IS NULL OR e.balance_after_cents <> a.balance_cents))
        LIMIT 5""",
    ),
    (
        "sequences_gap_free",
        "each account's open entries continue its closing sequence up to last_sequence without gaps",
        f"""SELECT a.id AS id FROM accounts a
        LEFT JOIN account_closings c ON c.account_id = a.id
        LEFT JOIN (SELECT e.account_id, count(*) AS n, min(e.sequence) AS lo, max(e.sequence) AS hi
                   FROM ledger_entries e WHERE {_OPEN} GROUP BY e.account_id) s ON s.account_id = a.id
        WHERE coalesce(s.n, 0) <> a.last_sequence - coalesce(c.sequence, 0)
           OR coalesce(s.hi, c.sequence, 0) <> a.last_sequence
           OR (s.n > 0 AND s.lo <> coalesce(c.sequence, 0) + 1)
        LIMIT 5""",  # noqa: S608 - constant fragments
    ),
    (
        "entries_chain",
        "each open entry's balance_after is the previous entry's (or the closing balance) plus its amount",
        f"""SELECT e.id AS id FROM ledger_entries e
        LEFT JOIN ledger_entries p ON p.account_id = e.account_id AND p.sequence = e.sequence - 1
        LEFT JOIN account_closings c ON c.account_id = e.account_id
        WHERE {_OPEN}
          AND e.balance_after_cents IS NOT
              CASE WHEN p.id IS NOT NULL THEN p.balance_after_cents
                   WHEN c.sequence = e.sequence - 1 THEN c.balance_cents
                   WHEN e.sequence = 1 THEN 0 END + e.amount_cents
        LIMIT 5""",  # noqa: S608 - constant fragments
    ),
    (
        "money_conserved",
        "all account balances sum to zero",
        """SELECT 0 AS id FROM (SELECT coalesce(sum(balance_cents), 0) AS total FROM accounts) WHERE total <> 0""",
    ),
    (
        "wallets_negative_only_by_reversal",
        "a wallet goes below zero only through a deposit reversal or a chargeback; no other account but clearing "
        "and promotions (the promotion cost outstanding, 0090) is negative",
        f"""SELECT e.id AS id FROM ledger_entries e
        JOIN accounts a ON a.id = e.account_id JOIN transfers t ON t.id = e.transfer_id
        WHERE {_OPEN} AND a.kind = 'client_wallet' AND e.amount_cents < 0 AND e.balance_after_cents < 0
          AND t.kind NOT IN ('deposit_reversal', 'chargeback')
        UNION ALL
        SELECT id FROM accounts WHERE balance_cents < 0
          AND kind NOT IN ('client_wallet', 'gateway_clearing', 'platform_promotions')
        LIMIT 5""",  # noqa: S608 - constant fragments
    ),
    (
        "approved_payments_credited_once",
        "each approved (or later reversed) payment has exactly one credit of its amount to its owner; no other payment has one",
        f"""SELECT p.id AS id FROM payments p
        LEFT JOIN (SELECT t.reference_id AS payment_id, count(DISTINCT t.id) AS n, sum(e.amount_cents) AS credited,
                          min(a.owner_user_id) AS owner
                   FROM transfers t
                   JOIN ledger_entries e ON e.transfer_id = t.id
                   JOIN accounts a ON a.id = e.account_id AND a.kind = 'client_wallet'
                   WHERE t.kind = 'deposit' AND t.reference_type = 'payment' AND t.reference_id IN {_PAYMENT_IDS}
                   GROUP BY t.reference_id) c ON c.payment_id = p.id
        WHERE {_PAYMENT_OPEN}
          AND CASE WHEN p.status IN ('approved', 'refunded') OR (p.status = 'voided' AND p.reversed_cents > 0)
                   THEN c.n IS NOT 1 OR c.credited IS NOT p.amount_cents OR c.owner IS NOT p.user_id
                   ELSE c.n IS NOT NULL END
        LIMIT 5""",  # noqa: S608 - constant fragments
    ),
    (
        "payment_reversals_recorded",
        "each payment's reversed_cents equals its deposit reversals",
        f"""SELECT p.id AS id FROM payments p
        LEFT JOIN (SELECT t.reference_id AS payment_id, -sum(e.amount_cents) AS reversed
                   FROM transfers t
                   JOIN ledger_entries e ON e.transfer_id = t.id
                   JOIN accounts a ON a.id = e.account_id AND a.kind = 'client_wallet'
                   WHERE t.kind = 'deposit_reversal' AND t.reference_type = 'payment'
                     AND t.reference_id IN {_PAYMENT_IDS}
                   GROUP BY t.reference_id) r ON r.payment_id = p.id
        WHERE {_PAYMENT_OPEN} AND p.reversed_cents <> coalesce(r.reversed, 0)
        LIMIT 5""",  # noqa: S608 - constant fragments
    ),
    (
        "reading_refunds_within_charges",
        "no reading is refunded more than it was charged; each refund is one reading_refund transfer giving the "
        "wallet its amount less what went back to promo credit",
        """SELECT f.reading_id AS id FROM reading_refunds f
        GROUP BY f.reading_id
        HAVING sum(f.amount_cents) >
               (SELECT coalesce(sum(amount_cents), 0) FROM reading_charges c WHERE c.reading_id = f.reading_id)
        UNION ALL
        SELECT f.id FROM reading_refunds f
        JOIN transfers t ON t.id = f.transfer_id
        JOIN ledger_entries e ON e.transfer_id = t.id
        JOIN accounts a ON a.id = e.account_id AND a.kind = 'client_wallet'
        WHERE t.kind <> 'reading_refund' OR e.amount_cents <> f.amount_cents - f.promo_cents
        UNION ALL
        SELECT f.id FROM reading_refunds f
        WHERE f.promo_cents <> (SELECT coalesce(sum(e.amount_cents), 0) FROM ledger_entries e
                                JOIN accounts a ON a.id = e.account_id AND a.kind = 'client_promo'
                                WHERE e.transfer_id = f.transfer_id)
          AND EXISTS (SELECT 1 FROM ledger_entries e WHERE e.transfer_id = f.transfer_id)  -- not closed
        LIMIT 5""",
    ),
    *card_checks.CHECKS,
)


# Advisor payouts and earnings clearance (migration 0093).
CHECKS = CHECKS + payout_checks.CHECKS

_STATES = ("held_for_review", "claimed_not_settled", "unknown")
# Waiting for the lookup: every waiting payment but one held for review.
_LOOKUP_STATE = "NOT (status = 'pending' AND gateway_transaction_id IS NOT NULL)"
_UNRESOLVED_PAYMENTS = f"""
SELECT count(*) AS n, min(created_at_ms) AS oldest_created_at_ms,
       coalesce(sum(status = 'pending' AND gateway_transaction_id IS NOT NULL), 0) AS held_for_review,
       coalesce(sum(status = 'pending' AND gateway_transaction_id IS NULL), 0) AS claimed_not_settled,
       coalesce(sum(status = 'unknown'), 0) AS unknown,
       coalesce(sum({_LOOKUP_STATE} AND created_at_ms < ?), 0) AS lookup_overdue,
       (SELECT json_group_array(id) FROM
          (SELECT id FROM payments WHERE status IN ('unknown', 'pending') ORDER BY created_at_ms, id LIMIT ?))
         AS sample_ids,
       (SELECT json_group_array(id) FROM
          (SELECT id FROM payments WHERE status IN ('unknown', 'pending') AND {_LOOKUP_STATE} AND created_at_ms < ?
           ORDER BY created_at_ms, id LIMIT ?)) AS overdue_ids
FROM payments WHERE status IN ('unknown', 'pending')"""  # noqa: S608 - constant text


async def check(db: Database, now_ms: int | None = None) -> dict[str, Any]:
    """Run every check in one batch; `ok` only if all hold."""
    now_ms = Clock().now_ms() if now_ms is None else now_ms
    overdue_before_ms = now_ms - RESOLVE_AFTER_MS
    checks_run = (*CHECKS, *promo_checks.CHECKS)
    results = await db.batch(
        [
            *(sql(query, *promo_checks.params(query, now_ms)) for _name, _holds, query in checks_run),
            sql(_UNRESOLVED_PAYMENTS, overdue_before_ms, SAMPLE, overdue_before_ms, SAMPLE),
            sql(_ACTIVE_COOLOFFS, now_ms, now_ms, COOLOFF_SAMPLE),
            *card_checks.report_statements(now_ms),
        ]
    )
    card_in_transit = results.pop().rows[0]
    card_holds = results.pop().rows[0]
    cooloffs = results.pop().rows[0]
    unresolved = results.pop().rows[0]
    checks = []
    for (name, holds, _query), result in zip(checks_run, results, strict=True):
        offenders = [str(row["id"]) for row in result.rows][:SAMPLE]
        detail = holds if not offenders else f"VIOLATED: {holds}; e.g. ids {', '.join(offenders)}"
        checks.append({"name": name, "ok": not offenders, "detail": detail})
    return {
        "ok": all(c["ok"] for c in checks),
        "checks": checks,
        **card_checks.report(card_holds, card_in_transit),
        "unresolved_payments": {
            "count": int(unresolved["n"]),
            "oldest_created_at": rfc3339(unresolved["oldest_created_at_ms"]),
            "sample_ids": [str(i) for i in json.loads(unresolved["sample_ids"])],
            "by_state": {state: int(unresolved[state]) for state in _STATES},
            "lookup_overdue": {
                "count": int(unresolved["lookup_overdue"]),
                "sample_ids": [str(i) for i in json.loads(unresolved["overdue_ids"])],
            },
        },
        "deposit_cooloffs": {
            "active_count": int(cooloffs["n"]),
            "items": [
                {
                    "scope": c["scope"],
                    "subject": c["subject"],
                    "failures": int(c["failures"]),
                    "trips": int(c["trips"]),
                    "started_at": rfc3339(c["started_at_ms"]),
                    "until": rfc3339(c["until_ms"]),
                }
                for c in json.loads(cooloffs["items"])
            ],
        },
    }


async def ledger_check(rc: RequestContext) -> Reply:
    return Reply(await check(rc.db, rc.clock.now_ms()))


SCHEMAS: dict[str, Any] = {
    "LedgerCheck": {
        "type": "object",
        "required": ["ok", "checks", "unresolved_payments", "deposit_cooloffs", *card_checks.SCHEMAS],
        "properties": {
            "ok": {"type": "boolean"},
            **card_checks.SCHEMAS,
            "deposit_cooloffs": {
                "type": "object",
                "description": "Card-testing cool-offs in force: deposits refused (429 deposit_cooloff) for a user "
                "(subject: the user id) or a client IP (subject: IPv4, or the IPv6 /64) whose declined or errored "
                "deposits reached DEPOSIT_FAILURES_PER_USER / DEPOSIT_FAILURES_PER_IP within "
                "DEPOSIT_FAILURE_WINDOW_SECONDS; the newest first. Not a violation.",
                "required": ["active_count", "items"],
                "properties": {
                    "active_count": {"type": "integer", "minimum": 0},
                    "items": {
                        "type": "array",
                        "maxItems": COOLOFF_SAMPLE,
                        "items": {
                            "type": "object",
                            "required": ["scope", "subject", "failures", "trips", "started_at", "until"],
                            "properties": {
                                "scope": {"type": "string", "enum": ["user", "ip"]},
                                "subject": {"type": "string"},
                                "failures": {"type": "integer", "minimum": 1},
                                "trips": {"type": "integer", "minimum": 1},
                                "started_at": {"type": "string", "format": "date-time"},
                                "until": {"type": "string", "format": "date-time"},
                            },
                        },
                    },
                },
            },
            "unresolved_payments": {
                "type": "object",
                "description": "Payments awaiting the gateway's word (unknown or held for review); not a violation.",
                "required": ["count", "oldest_created_at", "sample_ids", "by_state", "lookup_overdue"],
                "properties": {
                    "count": {"type": "integer", "minimum": 0},
                    "oldest_created_at": {"type": ["string", "null"], "format": "date-time"},
                    "sample_ids": {"type": "array", "items": {"type": "string"}, "maxItems": SAMPLE},
                    "by_state": {
                        "type": "object",
                        "description": "held_for_review: pending with the gateway's transaction id (the fraud "
                        "webhook decides); claimed_not_settled: the claim committed, no gateway answer recorded "
                        "(maybe never sent); unknown: timeout, unreadable answer, duplicate, recovered claim. "
                        "The cron's gateway lookup resolves the last two.",
                        "required": list(_STATES),
                        "properties": {state: {"type": "integer", "minimum": 0} for state in _STATES},
                    },
                    "lookup_overdue": {
                        "type": "object",
                        "description": "Claimed or unknown payments older than the lookup's grace period and "
                        "still waiting: resolve by hand (see the logs' deposit_lookup_* events).",
                        "required": ["count", "sample_ids"],
                        "properties": {
                            "count": {"type": "integer", "minimum": 0},
                            "sample_ids": {"type": "array", "items": {"type": "string"}, "maxItems": SAMPLE},
                        },
                    },
                },
            },
            "checks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "ok", "detail"],
                    "properties": {"name": {"type": "string"}, "ok": {"type": "boolean"}, "detail": {"type": "string"}},
                },
            },
        },
    },
}

ROUTES = [
    Route(
        "GET",
        "/v1/admin/ledger/check",
        ledger_check,
        "Reconciliation report: every ledger invariant, checked",
        auth="admin",
        primary=True,
        responses={200: "LedgerCheck"},
        tag="admin",
    ),
]
