"""The ledger check's payout and clearance invariants (reconcile.py runs them
with the others, in its one batch). Each query returns offending ids as `id`;
none means the invariant holds. The triggers of migration 0093 refuse a write
that would break one; these prove afterwards that the data still holds them."""

from .periods import OPEN_TRANSFER_IDS, open_record_ids

# The payouts of the open period (periods.open_record_ids): named by one of its
# transfers, or still open (their money in transit).
_PAYOUT_IDS = open_record_ids("payout", "SELECT id FROM payouts WHERE status IN ('requested', 'sent', 'unclaimed')")

# Accounts 4 (payouts_in_transit) and 5 (payout_clearing) are ledger.py's platform singletons.
CHECKS: tuple[tuple[str, str, str], ...] = (
    (
        "payouts_in_transit_match_open_payouts",
        "the payouts-in-transit balance equals the open payouts (requested, sent, unclaimed)",
        """SELECT a.id AS id FROM accounts a
        WHERE a.id = 4 AND a.balance_cents <>
          (SELECT coalesce(sum(amount_cents), 0) FROM payouts WHERE status IN ('requested', 'sent', 'unclaimed'))
        LIMIT 5""",
    ),
    (
        "payout_clearing_matches_paid_payouts",
        "the payout-clearing balance equals the succeeded payouts (a returned one has given it back)",
        """SELECT a.id AS id FROM accounts a
        WHERE a.id = 5 AND a.balance_cents <>
          (SELECT coalesce(sum(amount_cents), 0) FROM payouts WHERE status = 'succeeded')
        LIMIT 5""",
    ),
    (
        "payout_transfers_match_status",
        "each payout has its payout transfer (cleared -> in transit, its amount), a settlement iff it "
        "succeeded (or was returned after one), a return iff it failed or was returned (from clearing "
        "after a settlement, else from transit), no failed payout was paid after all (its item SUCCESS), "
        "and every payout transfer names a payout",
        f"""SELECT p.id AS id FROM payouts p
        LEFT JOIN transfers tp ON tp.transfer_key = 'payout:' || p.id AND tp.kind = 'payout'
        LEFT JOIN transfers ts ON ts.transfer_key = 'payout:' || p.id || ':settlement' AND ts.kind = 'payout_settlement'
        LEFT JOIN transfers tr ON tr.transfer_key = 'payout:' || p.id || ':return' AND tr.kind = 'payout_return'
        WHERE p.id IN {_PAYOUT_IDS}
          AND NOT EXISTS (SELECT 1 FROM transfers x WHERE x.id IN (tp.id, ts.id, tr.id)  -- closed: proved then
                          AND NOT EXISTS (SELECT 1 FROM ledger_entries y WHERE y.transfer_id = x.id))
          AND (tp.id IS NULL
           OR (p.status IN ('requested', 'sent', 'unclaimed') AND (ts.id IS NOT NULL OR tr.id IS NOT NULL))
           OR (p.status = 'succeeded' AND (ts.id IS NULL OR tr.id IS NOT NULL))
           OR (p.status = 'failed' AND (tr.id IS NULL OR ts.id IS NOT NULL))
           OR (p.status = 'returned' AND tr.id IS NULL)
           OR (p.status = 'failed' AND p.item_status = 'SUCCESS')
           OR NOT EXISTS (SELECT 1 FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
                          WHERE e.transfer_id = tp.id AND a.kind = 'advisor_cleared'
                            AND a.owner_user_id = p.advisor_id AND e.amount_cents = -p.amount_cents)
           OR NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.transfer_id = tp.id
                            AND e.account_id = 4 AND e.amount_cents = p.amount_cents)
           OR (ts.id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.transfer_id = ts.id
                            AND e.account_id = 5 AND e.amount_cents = p.amount_cents))
           OR (tr.id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
                            WHERE e.transfer_id = tr.id AND a.kind = 'advisor_cleared'
                              AND a.owner_user_id = p.advisor_id AND e.amount_cents = p.amount_cents))
           OR (tr.id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.transfer_id = tr.id
                            AND e.account_id = CASE WHEN ts.id IS NULL THEN 4
                                                    ELSE 5 END
                            AND e.amount_cents = -p.amount_cents)))
        UNION ALL
        SELECT t.id FROM transfers t
        WHERE t.id IN {OPEN_TRANSFER_IDS} AND t.kind IN ('payout', 'payout_settlement', 'payout_return')
          AND (t.reference_type IS NOT 'payout' OR NOT EXISTS (SELECT 1 FROM payouts WHERE id = t.reference_id))
        LIMIT 5""",  # noqa: S608 - constant fragments
    ),
    (
        "clearances_match_transfers",
        "each earnings clearance is one earnings_clearance transfer of its amount from the advisor's "
        "pending to its cleared earnings, and every such transfer has its clearance",
        f"""SELECT c.id AS id FROM earnings_clearances c
        LEFT JOIN transfers t ON t.id = c.transfer_id
        WHERE t.id IS NULL OR t.kind <> 'earnings_clearance' OR t.reference_id IS NOT c.id
           OR (EXISTS (SELECT 1 FROM ledger_entries y WHERE y.transfer_id = t.id)  -- not closed (periods.py)
               AND (NOT EXISTS (SELECT 1 FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
                          WHERE e.transfer_id = t.id AND a.kind = 'advisor_earnings'
                            AND a.owner_user_id = c.advisor_id AND e.amount_cents = -c.amount_cents)
                    OR NOT EXISTS (SELECT 1 FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
                          WHERE e.transfer_id = t.id AND a.kind = 'advisor_cleared'
                            AND a.owner_user_id = c.advisor_id AND e.amount_cents = c.amount_cents)))
        UNION ALL
        SELECT t.id FROM transfers t
        WHERE t.id IN {OPEN_TRANSFER_IDS} AND t.kind = 'earnings_clearance'
          AND NOT EXISTS (SELECT 1 FROM earnings_clearances c WHERE c.transfer_id = t.id)
        LIMIT 5""",  # noqa: S608 - constant fragments
    ),
    (
        "advisor_earnings_never_negative",
        "no advisor's pending or cleared earnings are, or ever were, below zero, and every advisor has both "
        "accounts and a clearance cursor",
        """SELECT e.id AS id FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
        WHERE a.kind IN ('advisor_earnings', 'advisor_cleared') AND e.balance_after_cents < 0
        UNION ALL
        SELECT a.id FROM accounts a WHERE a.kind IN ('advisor_earnings', 'advisor_cleared') AND a.balance_cents < 0
        UNION ALL
        SELECT a.id FROM accounts a WHERE a.kind = 'advisor_earnings'
          AND (NOT EXISTS (SELECT 1 FROM accounts c WHERE c.owner_user_id = a.owner_user_id AND c.kind = 'advisor_cleared')
               OR NOT EXISTS (SELECT 1 FROM advisor_payout_state s WHERE s.advisor_id = a.owner_user_id))
        LIMIT 5""",
    ),
)
