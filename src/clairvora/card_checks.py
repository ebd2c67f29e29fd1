"""The ledger check's part for card money going back (reconcile.py runs these
in its one batch): refunds of unused funds (wallet_refunds.py) and chargebacks
(chargebacks.py), checked against the transfers that moved their money, plus
two reports that are not violations: the clients on hold behind an open
chargeback, and the refund parts still in transit (the cron's resolver
decides them; `overdue` ones are older than its grace period and still there:
the cron is not running, the lists cannot be read, or it could not decide)."""

import json
from typing import Any

from .clock import rfc3339
from .db import Statement, sql
from .periods import OPEN_TRANSFER_IDS, open_record_ids, open_records
from .refund_resolution import RESOLVE_AFTER_MS

SAMPLE = 5
HOLD_SAMPLE = 50

# The chargebacks and refund parts of the open period (periods.open_record_ids): named by
# one of its transfers, or still to move money (an open chargeback, a part in transit).
_CHARGEBACK_OPEN = "SELECT id FROM chargebacks WHERE state = 'open'"
_PART_IN_TRANSIT = "SELECT id FROM wallet_refund_parts WHERE state = 'in_transit'"

# (name, what holds when no row comes back, SQL returning offending ids as `id`)
CHECKS: tuple[tuple[str, str, str], ...] = (
    (
        "negative_wallets_explained",
        "a wallet below zero belongs to a client with a chargeback or a reversed deposit",
        """SELECT a.id AS id FROM accounts a
        WHERE a.kind = 'client_wallet' AND a.balance_cents < 0
          AND NOT EXISTS (SELECT 1 FROM chargebacks c WHERE c.user_id = a.owner_user_id)
          AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.user_id = a.owner_user_id AND p.reversed_cents > 0)
        LIMIT 5""",
    ),
    (
        "chargebacks_match_transfers",
        "each chargeback took its amount from its client's wallet once, a won one returned it once, its clawback "
        "gave the wallet clawback_cents; every chargeback transfer names a chargeback",
        f"""SELECT c.id AS id FROM chargebacks c
        LEFT JOIN (SELECT t.reference_id AS cid,
                     count(DISTINCT CASE WHEN t.kind = 'chargeback' THEN t.id END) AS n_taken,
                     sum(CASE WHEN t.kind = 'chargeback' AND a.kind = 'client_wallet' THEN -e.amount_cents END) AS taken,
                     min(CASE WHEN t.kind = 'chargeback' AND a.kind = 'client_wallet' THEN a.owner_user_id END) AS owner,
                     count(DISTINCT CASE WHEN t.kind = 'chargeback_reversal' THEN t.id END) AS n_back,
                     sum(CASE WHEN t.kind = 'chargeback_reversal' AND a.kind = 'gateway_clearing'
                              THEN -e.amount_cents END) AS back,
                     sum(CASE WHEN t.kind = 'clawback' AND a.kind = 'client_wallet' THEN e.amount_cents END) AS clawed
                   FROM transfers t JOIN ledger_entries e ON e.transfer_id = t.id JOIN accounts a ON a.id = e.account_id
                   WHERE t.reference_type = 'chargeback'
                     AND t.reference_id IN {open_record_ids("chargeback", _CHARGEBACK_OPEN)}
                   GROUP BY t.reference_id) x ON x.cid = c.id
        WHERE {open_records("chargeback", "c.id", _CHARGEBACK_OPEN)}
          AND (x.n_taken IS NOT 1 OR x.taken IS NOT c.amount_cents OR x.owner IS NOT c.user_id
           OR (c.state = 'won') <> (coalesce(x.n_back, 0) = 1) OR coalesce(x.n_back, 0) > 1
           OR (c.state = 'won' AND x.back IS NOT c.amount_cents)
           OR coalesce(x.clawed, 0) <> c.clawback_cents)
        UNION ALL
        SELECT t.id FROM transfers t
        WHERE t.id IN {OPEN_TRANSFER_IDS}
          AND (t.kind IN ('chargeback', 'chargeback_reversal') OR t.reference_type = 'chargeback')
          AND NOT EXISTS (SELECT 1 FROM chargebacks c WHERE c.id = t.reference_id AND t.reference_type = 'chargeback')
        LIMIT 5""",  # noqa: S608 - constant fragments
    ),
    (
        "payments_charged_back_recorded",
        "each payment's charged_back_cents equals its open and lost chargebacks",
        # Only payments with a chargeback or charged_back_cents (any other holds 0 = 0):
        # through chargebacks_by_payment and the partial index of 0099, not every payment.
        """SELECT p.id AS id FROM payments p
        LEFT JOIN (SELECT payment_id, sum(amount_cents) AS cents FROM chargebacks
                   WHERE state IN ('open', 'lost') GROUP BY payment_id) c ON c.payment_id = p.id
        WHERE p.id IN (SELECT payment_id FROM chargebacks UNION SELECT id FROM payments WHERE charged_back_cents <> 0)
          AND p.charged_back_cents <> coalesce(c.cents, 0)
        LIMIT 5""",
    ),
    (
        "wallet_refunds_match_transfers",
        "each refund part reserved its amount from its client's wallet once and was settled to the gateway or "
        "returned to the wallet at most once, as its state says; refunds in transit hold exactly the parts in "
        "transit; every wallet-refund transfer names a part; a refund is the sum of its parts",
        f"""SELECT pt.id AS id FROM wallet_refund_parts pt
        LEFT JOIN (SELECT t.reference_id AS pid,
                     count(DISTINCT CASE WHEN t.kind = 'wallet_refund' THEN t.id END) AS n_res,
                     sum(CASE WHEN t.kind = 'wallet_refund' AND a.kind = 'client_wallet' THEN -e.amount_cents END)
                       AS reserved,
                     min(CASE WHEN t.kind = 'wallet_refund' AND a.kind = 'client_wallet' THEN a.owner_user_id END)
                       AS owner,
                     count(DISTINCT CASE WHEN t.kind = 'wallet_refund_settlement' THEN t.id END) AS n_set,
                     sum(CASE WHEN t.kind = 'wallet_refund_settlement' AND a.kind = 'gateway_clearing'
                              THEN e.amount_cents END) AS settled,
                     count(DISTINCT CASE WHEN t.kind = 'wallet_refund_return' THEN t.id END) AS n_ret,
                     sum(CASE WHEN t.kind = 'wallet_refund_return' AND a.kind = 'client_wallet'
                              THEN e.amount_cents END) AS returned
                   FROM transfers t JOIN ledger_entries e ON e.transfer_id = t.id JOIN accounts a ON a.id = e.account_id
                   WHERE t.reference_type = 'wallet_refund'
                     AND t.reference_id IN {open_record_ids("wallet_refund", _PART_IN_TRANSIT)}
                   GROUP BY t.reference_id) x ON x.pid = pt.id
        WHERE {open_records("wallet_refund", "pt.id", _PART_IN_TRANSIT)}
          AND (x.n_res IS NOT 1 OR x.reserved IS NOT pt.amount_cents OR x.owner IS NOT pt.user_id
           OR coalesce(x.n_set, 0) <> (pt.state = 'settled') OR coalesce(x.n_ret, 0) <> (pt.state = 'returned')
           OR (pt.state = 'settled' AND x.settled IS NOT pt.amount_cents)
           OR (pt.state = 'returned' AND x.returned IS NOT pt.amount_cents))
        UNION ALL
        SELECT t.id FROM transfers t
        WHERE t.id IN {OPEN_TRANSFER_IDS}
          AND (t.kind IN ('wallet_refund', 'wallet_refund_settlement', 'wallet_refund_return')
               OR t.reference_type = 'wallet_refund')
          AND NOT EXISTS (SELECT 1 FROM wallet_refund_parts p WHERE p.id = t.reference_id
                          AND t.reference_type = 'wallet_refund')
        UNION ALL
        SELECT a.id FROM accounts a WHERE a.kind = 'refunds_in_transit'
          AND a.balance_cents <> (SELECT coalesce(sum(amount_cents), 0) FROM wallet_refund_parts WHERE state = 'in_transit')
        UNION ALL
        SELECT r.id FROM wallet_refunds r
        WHERE r.amount_cents <> (SELECT coalesce(sum(amount_cents), 0) FROM wallet_refund_parts WHERE refund_id = r.id)
           OR r.parts <> (SELECT count(*) FROM wallet_refund_parts WHERE refund_id = r.id)
        LIMIT 5""",  # noqa: S608 - constant fragments
    ),
    (
        "payments_refunded_recorded",
        "each payment's refunded_cents equals its refund parts in transit or settled, of its own client",
        """SELECT p.id AS id FROM payments p
        LEFT JOIN (SELECT payment_id, sum(amount_cents) AS cents, min(user_id) AS lo, max(user_id) AS hi
                   FROM wallet_refund_parts WHERE state IN ('in_transit', 'settled') GROUP BY payment_id) r
          ON r.payment_id = p.id
        WHERE p.id IN (SELECT payment_id FROM wallet_refund_parts UNION SELECT id FROM payments WHERE refunded_cents <> 0)
          AND (p.refunded_cents <> coalesce(r.cents, 0) OR r.lo IS NOT NULL AND (r.lo <> p.user_id OR r.hi <> p.user_id))
        LIMIT 5  -- only payments with a refund part or refunded_cents (any other holds 0 = 0)""",
    ),
    (
        "refunds_only_wallet_cash",
        "refunds of unused funds move only wallet cash (never promotional credit or earnings)",
        """SELECT e.id AS id FROM ledger_entries e JOIN transfers t ON t.id = e.transfer_id
        JOIN accounts a ON a.id = e.account_id
        WHERE t.kind IN ('wallet_refund', 'wallet_refund_settlement', 'wallet_refund_return')
          AND a.kind NOT IN ('client_wallet', 'refunds_in_transit', 'gateway_clearing')
        LIMIT 5""",
    ),
)

_HOLDS = """
SELECT (SELECT count(*) FROM chargebacks WHERE state = 'open') AS n,
       (SELECT count(DISTINCT user_id) FROM chargebacks WHERE state = 'open') AS clients,
       (SELECT json_group_array(json_object('client_id', user_id, 'chargeback_id', id, 'deposit_id', payment_id,
                                            'amount_cents', amount_cents, 'created_at_ms', created_at_ms))
        FROM (SELECT * FROM chargebacks WHERE state = 'open' ORDER BY created_at_ms DESC LIMIT ?)) AS items"""
_IN_TRANSIT = """
SELECT count(*) AS n, coalesce(sum(amount_cents), 0) AS cents,
       coalesce(sum(updated_at_ms < ?), 0) AS overdue,
       (SELECT json_group_array(id) FROM (SELECT id FROM wallet_refund_parts WHERE state = 'in_transit'
          AND updated_at_ms < ? ORDER BY updated_at_ms LIMIT ?)) AS overdue_ids
FROM wallet_refund_parts WHERE state = 'in_transit'"""


def report_statements(now_ms: int) -> list[Statement]:
    overdue_before = now_ms - RESOLVE_AFTER_MS
    return [sql(_HOLDS, HOLD_SAMPLE), sql(_IN_TRANSIT, overdue_before, overdue_before, SAMPLE)]


def report(holds: dict[str, Any], in_transit: dict[str, Any]) -> dict[str, Any]:
    return {
        "chargeback_holds": {
            "open_count": int(holds["n"]),
            "clients_on_hold": int(holds["clients"]),
            "items": [
                {
                    "client_id": str(h["client_id"]),
                    "chargeback_id": str(h["chargeback_id"]),
                    "deposit_id": str(h["deposit_id"]),
                    "amount_cents": int(h["amount_cents"]),
                    "since": rfc3339(h["created_at_ms"]),
                }
                for h in json.loads(holds["items"])
            ],
        },
        "refunds_in_transit": {
            "count": int(in_transit["n"]),
            "cents": int(in_transit["cents"]),
            "overdue": {
                "count": int(in_transit["overdue"]),
                "sample_ids": [str(i) for i in json.loads(in_transit["overdue_ids"])],
            },
        },
    }


SCHEMAS: dict[str, Any] = {
    "chargeback_holds": {
        "type": "object",
        "description": "Clients on hold (no new readings, deposits or refunds) behind an open chargeback; the "
        "newest first. Not a violation.",
        "required": ["open_count", "clients_on_hold", "items"],
        "properties": {
            "open_count": {"type": "integer", "minimum": 0},
            "clients_on_hold": {"type": "integer", "minimum": 0},
            "items": {
                "type": "array",
                "maxItems": HOLD_SAMPLE,
                "items": {
                    "type": "object",
                    "required": ["client_id", "chargeback_id", "deposit_id", "amount_cents", "since"],
                    "properties": {
                        "client_id": {"type": "string"},
                        "chargeback_id": {"type": "string"},
                        "deposit_id": {"type": "string"},
                        "amount_cents": {"type": "integer"},
                        "since": {"type": "string", "format": "date-time"},
                    },
                },
            },
        },
    },
    "refunds_in_transit": {
        "type": "object",
        "description": "Refund parts awaiting the gateway's word (the cron decides them from its transaction "
        "lists); overdue: past the resolver's grace period and still waiting. Not a violation.",
        "required": ["count", "cents", "overdue"],
        "properties": {
            "count": {"type": "integer", "minimum": 0},
            "cents": {"type": "integer", "minimum": 0},
            "overdue": {
                "type": "object",
                "required": ["count", "sample_ids"],
                "properties": {
                    "count": {"type": "integer", "minimum": 0},
                    "sample_ids": {"type": "array", "items": {"type": "string"}, "maxItems": SAMPLE},
                },
            },
        },
    },
}
