-- The per-minute charge without the work its triggers did twice (issue 15 item 4;
-- docs/BENCHMARKS.md "The per-minute charge, row by row" has the account, measured
-- by bench/charge_rows.py). Every rule and every refusal code stays as it was.

-- 1. A posting counted the transfer's entries and then summed them: two passes
-- over the same rows. One aggregate does both (every transfer, not only charges).
-- destructive-ok: recreated just below with the same rules
DROP TRIGGER transfers_check_post;

CREATE TRIGGER transfers_check_post
BEFORE UPDATE ON transfers
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only')
  WHERE NOT (OLD.posted = 0 AND NEW.posted = 1
             AND NEW.id = OLD.id AND NEW.transfer_key = OLD.transfer_key AND NEW.kind = OLD.kind
             AND NEW.reference_type IS OLD.reference_type AND NEW.reference_id IS OLD.reference_id
             AND NEW.requested_by_user_id IS OLD.requested_by_user_id
             AND NEW.created_at_ms = OLD.created_at_ms);
  SELECT RAISE(ABORT, 'ledger_unbalanced_transfer')
  FROM (SELECT count(*) AS n, coalesce(sum(amount_cents), 0) AS total FROM ledger_entries WHERE transfer_id = NEW.id)
  WHERE n < 2 OR total <> 0;
END;

-- 2. A charge row's two BEFORE INSERT triggers read the reading five times (each
-- check its own subquery, the presence trigger again) and its transfer twice. One
-- trigger reads each once and asks the same questions in the order they were
-- answered before: the presence trigger, created last, fired first; then the
-- checks of reading_charges_check in their order. A CASE stops at the first
-- refusal, so a later question (the legs, the grants) is not read for an earlier one.
-- destructive-ok: its rules are in the new reading_charges_check below, unchanged
DROP TRIGGER reading_charges_presence;
-- destructive-ok: recreated just below with the same rules, reading the reading and the transfer once
DROP TRIGGER reading_charges_check;

CREATE TRIGGER reading_charges_check
BEFORE INSERT ON reading_charges
BEGIN
  SELECT CASE
    -- (was reading_charges_presence; 0040 explains the two rules)
    WHEN r.status = 'active' AND r.billed_minutes = NEW.minute - 1
     AND ((NEW.charged_at_ms - min(coalesce(r.client_heartbeat_at_ms, r.accepted_at_ms),
                                   coalesce(r.advisor_heartbeat_at_ms, r.accepted_at_ms))
             > r.heartbeat_timeout_seconds * 1000
           AND r.accepted_at_ms + (NEW.minute - 1) * r.billing_period_seconds * 1000
             > min(coalesce(r.client_heartbeat_at_ms, r.accepted_at_ms),
                   coalesce(r.advisor_heartbeat_at_ms, r.accepted_at_ms)))
       OR (t.requested_by_user_id = r.advisor_id
           AND r.accepted_at_ms + (NEW.minute - 1) * r.billing_period_seconds * 1000
             > coalesce(r.client_heartbeat_at_ms, r.accepted_at_ms)))
      THEN RAISE(ABORT, 'reading_party_silent')
    WHEN NOT coalesce(r.status = 'active' AND r.billed_minutes = NEW.minute - 1
                      AND r.rate_cents_per_minute = NEW.amount_cents, 0)
      THEN RAISE(ABORT, 'reading_not_billable')
    WHEN NOT coalesce(t.kind = 'reading_charge' AND t.posted = 1
                      AND t.reference_type = 'reading' AND t.reference_id = NEW.reading_id, 0)
      -- the legs: exactly the split of 0091 for promo_cents, nothing else
      OR EXISTS (
        SELECT count(*) FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
        WHERE e.transfer_id = NEW.transfer_id
        HAVING coalesce(sum(CASE WHEN (a.kind IN ('client_wallet', 'client_promo') AND a.owner_user_id = r.client_id)
                                   OR (a.kind = 'advisor_earnings' AND a.owner_user_id = r.advisor_id)
                                   OR a.id IN (1, 3) THEN 0 ELSE 1 END), 0) <> 0
            OR coalesce(sum(CASE WHEN a.kind = 'client_wallet' AND a.owner_user_id = r.client_id
                                 THEN e.amount_cents END), 0) <> NEW.promo_cents - NEW.amount_cents
            OR coalesce(sum(CASE WHEN a.kind = 'client_promo' AND a.owner_user_id = r.client_id
                                 THEN e.amount_cents END), 0) <> -NEW.promo_cents
            OR coalesce(sum(CASE WHEN a.kind = 'advisor_earnings' AND a.owner_user_id = r.advisor_id
                                 THEN e.amount_cents END), 0)
               <> r.advisor_cents_per_minute - r.advisor_cents_per_minute * NEW.promo_cents / NEW.amount_cents
                  + coalesce(r.promo_advisor_cents_per_minute, r.advisor_cents_per_minute)
                    * NEW.promo_cents / NEW.amount_cents
            OR coalesce(sum(CASE WHEN a.id = 3 THEN e.amount_cents END), 0)
               <> NEW.promo_cents - coalesce(r.promo_advisor_cents_per_minute, r.advisor_cents_per_minute)
                                    * NEW.promo_cents / NEW.amount_cents
            OR coalesce(sum(CASE WHEN a.id = 1 THEN e.amount_cents END), 0)
               <> NEW.amount_cents
                  - coalesce(sum(CASE WHEN a.kind = 'advisor_earnings' AND a.owner_user_id = r.advisor_id
                                      THEN e.amount_cents END), 0)
                  - coalesce(sum(CASE WHEN a.id = 3 THEN e.amount_cents END), 0))
      THEN RAISE(ABORT, 'reading_charge_transfer_mismatch')
    WHEN NEW.promo_cents < NEW.amount_cents
     AND EXISTS (SELECT 1 FROM promo_grants g
                 WHERE g.client_id = r.client_id AND g.remaining_cents > 0
                   AND g.expires_at_ms > r.accepted_at_ms + (NEW.minute - 1) * r.billing_period_seconds * 1000)
      THEN RAISE(ABORT, 'promo_not_first')
    WHEN EXISTS (
      SELECT 1 FROM promo_grants u
      WHERE u.last_transfer_id = NEW.transfer_id
        AND (u.client_id <> r.client_id
             OR u.expires_at_ms <= r.accepted_at_ms + (NEW.minute - 1) * r.billing_period_seconds * 1000
             OR EXISTS (SELECT 1 FROM promo_grants g
                        WHERE g.client_id = u.client_id AND g.remaining_cents > 0 AND g.id <> u.id
                          AND g.expires_at_ms > r.accepted_at_ms + (NEW.minute - 1) * r.billing_period_seconds * 1000
                          AND (g.expires_at_ms < u.expires_at_ms
                               OR (g.expires_at_ms = u.expires_at_ms AND g.id < u.id)))))
      THEN RAISE(ABORT, 'promo_grant_order')
  END
  FROM (SELECT NEW.reading_id AS reading_id, NEW.transfer_id AS transfer_id) n
  LEFT JOIN readings r ON r.id = n.reading_id
  LEFT JOIN transfers t ON t.id = n.transfer_id;
END;

-- 3. A posting's promo rules asked whether each leg's promo account is in step with
-- its grants for EVERY leg: `kind = 'client_promo' AND <subquery>` evaluated the
-- subquery on the wallet, earnings and platform legs too (3 rows of a wallet-paid
-- minute). A CASE asks it of promo legs only. Rules unchanged (0091).
-- destructive-ok: recreated just below with the same rules
DROP TRIGGER transfers_promo_rules;

CREATE TRIGGER transfers_promo_rules
AFTER UPDATE OF posted ON transfers
WHEN NEW.posted = 1 AND OLD.posted = 0
BEGIN
  SELECT CASE
    WHEN s.promo_legs > 0 AND (
          s.cash_legs > 0
       OR NEW.kind NOT IN ('promo_grant', 'promo_expiry', 'satisfaction_credit', 'reading_charge', 'reading_refund')
       OR (NEW.kind IN ('promo_grant', 'satisfaction_credit') AND (s.promo_debits > 0 OR s.other_legs > 0))
       OR (NEW.kind = 'promo_expiry' AND (s.promo_credits > 0 OR s.other_legs > 0))
       OR (NEW.kind = 'reading_charge' AND (s.promo_credits > 0 OR s.wallet_credits > 0))
       OR (NEW.kind = 'reading_refund' AND (s.promo_debits > 0 OR s.wallet_debits > 0)))
      THEN RAISE(ABORT, 'promo_not_transferable')
    WHEN s.out_of_step > 0 THEN RAISE(ABORT, 'promo_out_of_step')
  END
  FROM (SELECT sum(a.kind = 'client_promo') AS promo_legs,
               sum(a.kind = 'client_promo' AND e.amount_cents > 0) AS promo_credits,
               sum(a.kind = 'client_promo' AND e.amount_cents < 0) AS promo_debits,
               sum(a.kind IN ('gateway_clearing', 'payouts_in_transit', 'payout_clearing', 'refunds_in_transit',
                              'advisor_cleared')) AS cash_legs,
               sum(a.kind = 'client_wallet' AND e.amount_cents > 0) AS wallet_credits,
               sum(a.kind = 'client_wallet' AND e.amount_cents < 0) AS wallet_debits,
               sum(a.kind NOT IN ('client_promo', 'platform_promotions')) AS other_legs,
               sum(CASE WHEN a.kind = 'client_promo'
                        THEN a.balance_cents <> (SELECT coalesce(sum(g.remaining_cents), 0) FROM promo_grants g
                                                 WHERE g.client_id = a.owner_user_id AND g.remaining_cents > 0)
                        ELSE 0 END) AS out_of_step
        FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
        WHERE e.transfer_id = NEW.id) s;
END;
