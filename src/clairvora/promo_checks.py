"""The ledger check's promo invariants (reconcile.py runs them in its batch).

Each query selects up to 5 offending ids (none: the invariant holds). `?` is
the check's time less EXPIRY_GRACE_MS (only promo_expiry_complete has one). They cross-check the
ledger against the promo tables, which are written in the same batches but
by other statements: the account balances against the grants, the grants
against the charges, the promotions account against every record that
moves it.
"""

from typing import Any

from .periods import movements_in_d1
from .promo import CHARGE_PROMOTIONS_CENTS, EXPIRY_GRACE_MS

# (name, what holds, SQL). A check that compares a record with its ledger
# entries looks only at records whose transfers still hold their entries in D1:
# a closed ledger period (periods.py) took the others to R2, proved then.
CHECKS: tuple[tuple[str, str, str], ...] = (
    (
        "promo_never_negative",
        "no promo account, and no promo entry's balance after it, is below zero",
        """SELECT e.id AS id FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
        WHERE a.kind = 'client_promo' AND e.balance_after_cents < 0
        UNION ALL SELECT id FROM accounts WHERE kind = 'client_promo' AND balance_cents < 0
        LIMIT 5""",
    ),
    (
        "promo_never_cashed_out",
        "promo credit moves only by promo grants, satisfaction credits, expiries (to and from the promotions "
        "account), reading charges (debits) and reading refunds (credits); never to a gateway, payout, "
        "refund-in-transit or cleared-earnings account, nor into a wallet",
        """SELECT t.id AS id FROM transfers t
        JOIN ledger_entries p ON p.transfer_id = t.id JOIN accounts pa ON pa.id = p.account_id AND pa.kind = 'client_promo'
        WHERE t.kind NOT IN ('promo_grant', 'promo_expiry', 'satisfaction_credit', 'reading_charge', 'reading_refund')
           OR (t.kind IN ('promo_grant', 'satisfaction_credit', 'reading_refund') AND p.amount_cents < 0)
           OR (t.kind IN ('promo_expiry', 'reading_charge') AND p.amount_cents > 0)
           OR EXISTS (SELECT 1 FROM ledger_entries o JOIN accounts oa ON oa.id = o.account_id
                      WHERE o.transfer_id = t.id
                        AND (oa.kind IN ('gateway_clearing', 'payouts_in_transit', 'payout_clearing',
                                         'refunds_in_transit', 'advisor_cleared')
                             OR (oa.kind = 'client_wallet' AND sign(o.amount_cents) <> sign(p.amount_cents))))
        LIMIT 5""",
    ),
    (
        "promo_in_step_with_grants",
        "each client's promo balance equals what its grants still hold",
        """SELECT a.id AS id FROM accounts a
        WHERE a.kind = 'client_promo'
          AND a.balance_cents <> (SELECT coalesce(sum(remaining_cents), 0) FROM promo_grants g
                                  WHERE g.client_id = a.owner_user_id)
        UNION ALL
        SELECT g.client_id FROM promo_grants g
        WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.owner_user_id = g.client_id AND a.kind = 'client_promo')
        LIMIT 5""",
    ),
    (
        "promo_spent_by_charges",
        "per client, promo credit granted minus expired minus still held equals what its minute charges "
        "drew from promo credit; each grant's transfer credited exactly its amount",
        """SELECT s.client_id AS id FROM (
            SELECT client_id, sum(amount_cents - expired_cents - remaining_cents) AS spent
            FROM promo_grants GROUP BY client_id) s
        WHERE s.spent <> (SELECT coalesce(sum(c.promo_cents), 0) FROM reading_charges c
                          JOIN readings r ON r.id = c.reading_id WHERE r.client_id = s.client_id)
        UNION ALL
        SELECT g.id FROM promo_grants g
        WHERE g.amount_cents <> (SELECT coalesce(sum(e.amount_cents), 0) FROM ledger_entries e
                                 JOIN accounts a ON a.id = e.account_id AND a.kind = 'client_promo'
                                 WHERE e.transfer_id = g.transfer_id)
          AND EXISTS (SELECT 1 FROM ledger_entries e WHERE e.transfer_id = g.transfer_id)  -- not closed (periods.py)
        LIMIT 5""",
    ),
    (
        "promo_expiry_complete",
        f"no grant still holds credit {EXPIRY_GRACE_MS // 60000} minutes after it expired (the cron returns it to "
        "the promotions account), and each expiry returned exactly what was left",
        f"""SELECT id FROM promo_grants WHERE remaining_cents > 0 AND expires_at_ms < ?
        UNION ALL
        SELECT g.id FROM promo_grants g
        WHERE g.expired_cents <> (SELECT coalesce(sum(e.amount_cents), 0) FROM transfers t
                                  JOIN ledger_entries e ON e.transfer_id = t.id AND e.account_id = 3
                                  WHERE t.kind = 'promo_expiry' AND t.reference_type = 'promo_grant'
                                    AND t.reference_id = g.id)
          AND {movements_in_d1("promo_grant", "g.id")}
        LIMIT 5""",  # noqa: S608 - constant fragments
    ),
    (
        "promotions_account_reconciles",
        "the promotions account = -(credit it granted) + expired credit returned + the unpaid part of "
        "promo-paid minutes - what refunds took back from it + clawbacks; i.e. -(promo outstanding) - "
        "(what promotions cost so far)",
        f"""SELECT 3 AS id FROM accounts a WHERE a.id = 3 AND a.balance_cents <>
          - (SELECT coalesce(sum(amount_cents), 0) FROM promo_grants WHERE source <> 'reading_refund')
          + (SELECT coalesce(sum(expired_cents), 0) FROM promo_grants)
          + (SELECT coalesce(sum({CHARGE_PROMOTIONS_CENTS}), 0) FROM reading_charges c
             JOIN readings r ON r.id = c.reading_id WHERE c.promo_cents > 0)
          - (SELECT coalesce(sum(promotions_cents), 0) FROM reading_refunds)
          + (SELECT coalesce(sum(clawback_cents), 0) FROM satisfaction_claims)
        LIMIT 5""",  # noqa: S608 - constant text
    ),
    (
        "satisfaction_credits_paid",
        "each satisfaction claim has one grant of its amount and a clawback of exactly clawback_cents",
        f"""SELECT c.id AS id FROM satisfaction_claims c
        WHERE (SELECT count(*) FROM promo_grants g WHERE g.claim_id = c.id AND g.amount_cents = c.amount_cents) <> 1
           OR c.clawback_cents <> (SELECT coalesce(sum(e.amount_cents), 0) FROM transfers t
                                   JOIN ledger_entries e ON e.transfer_id = t.id AND e.account_id = 3
                                   WHERE t.kind = 'clawback' AND t.reference_type = 'satisfaction_claim'
                                     AND t.reference_id = c.id)
              AND {movements_in_d1("satisfaction_claim", "c.id")}
        LIMIT 5""",  # noqa: S608 - constant fragments
    ),
    (
        "promo_code_limits",
        "each code's count equals its redemptions, within its total and per-client limits",
        """SELECT c.id AS id FROM promo_codes c
        WHERE c.redemptions_count <> (SELECT count(*) FROM promo_redemptions d WHERE d.promo_code_id = c.id)
           OR c.redemptions_count > c.max_redemptions
           OR EXISTS (SELECT 1 FROM promo_redemptions d WHERE d.promo_code_id = c.id
                      GROUP BY d.client_id HAVING count(*) > c.per_client_limit)
        LIMIT 5""",
    ),
)


def params(query: str, now_ms: int) -> tuple[Any, ...]:
    return (now_ms - EXPIRY_GRACE_MS,) if "?" in query else ()
