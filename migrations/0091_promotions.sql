-- Promotional credit (issue 14, items 1-3): a promo balance per client beside
-- the wallet, free-minute offers (new clients, promo codes), admin promo codes
-- and satisfaction credits; every rule of it in SQL, inside the batch that
-- moves the money.
--
-- The accounts (0090): client_promo (per client, created by its first grant,
-- never below zero by its CHECK) and platform_promotions (id 3), which funds
-- every grant. A grant is a promo_grants row with remaining_cents, written in
-- the same batch as its transfer; every later movement of promo credit moves
-- remaining_cents in the same batch, and posting a transfer that touches a
-- client_promo account is refused unless that account's balance equals the sum
-- of its grants' remaining_cents (transfers_promo_rules: promo_out_of_step).
--
-- Spending: a minute charge (reading_charges) draws promo credit FIRST, from
-- the grants still valid when the minute began, earliest expiry first (FIFO by
-- expires_at_ms, then id), and the wallet pays only what promo credit cannot.
-- The charge row says how much was promo (promo_cents); its trigger checks the
-- legs of the transfer against it and refuses a wallet cent while a valid
-- grant still holds credit (promo_not_first) and a grant spent out of order or
-- after it expired (promo_grant_order).
--
-- Who pays a promo-paid cent: the client's promo credit, which the platform
-- funded. The advisor is paid as for a wallet-paid minute unless configured
-- otherwise (readings.promo_advisor_cents_per_minute, fixed at request from
-- PROMO_ADVISOR_SHARE_BPS; NULL = the normal share); the rest of a promo-paid
-- cent goes back to platform_promotions, never to platform_revenue (no real
-- money came in). For a minute with p promo cents out of rate r, advisor part
-- a, promo advisor part ap (integer division, as in SQL):
--   advisor    = a - a*p/r + ap*p/r        wallet     = -(r - p)
--   promotions = p - ap*p/r                promo      = -p
--   revenue    = r - advisor - promotions  (>= 0; = the platform part when p = 0)
-- So platform_promotions = -(promo credit outstanding) - (what promotions cost:
-- the advisor shares of promo-paid cents), and platform_revenue holds only
-- margin on real money.
--
-- Promo credit never leaves as cash: a transfer with a client_promo leg must be
-- a promo_grant, satisfaction_credit (both: promotions -> promo), promo_expiry
-- (promo -> promotions), reading_charge (debits only) or reading_refund
-- (credits only), and never has a leg on a gateway, payout, refund-in-transit
-- or cleared-earnings account (promo_not_transferable).

-- The advisor's part of a promo-paid minute, fixed with the other terms when
-- the reading is requested (NULL: the normal advisor part).
ALTER TABLE readings ADD COLUMN promo_advisor_cents_per_minute INTEGER
  CHECK (promo_advisor_cents_per_minute IS NULL
         OR (typeof(promo_advisor_cents_per_minute) = 'integer'
             AND promo_advisor_cents_per_minute BETWEEN 0 AND rate_cents_per_minute));

CREATE TRIGGER readings_promo_terms_fixed
BEFORE UPDATE OF promo_advisor_cents_per_minute ON readings
WHEN NEW.promo_advisor_cents_per_minute IS NOT OLD.promo_advisor_cents_per_minute
BEGIN
  SELECT RAISE(ABORT, 'reading_terms_fixed');
END;

-- How much of a minute's charge promo credit paid (the rest: the wallet).
ALTER TABLE reading_charges ADD COLUMN promo_cents INTEGER NOT NULL DEFAULT 0
  CHECK (promo_cents >= 0 AND promo_cents <= amount_cents);

-- A refund gives promo-paid cents back as promo credit (promo_cents, a new
-- grant) and takes back from platform_promotions its part (promotions_cents,
-- part of platform_cents; the rest of platform_cents is platform_revenue's).
ALTER TABLE reading_refunds ADD COLUMN promo_cents INTEGER NOT NULL DEFAULT 0
  CHECK (promo_cents >= 0 AND promo_cents <= amount_cents);
ALTER TABLE reading_refunds ADD COLUMN promotions_cents INTEGER NOT NULL DEFAULT 0
  CHECK (promotions_cents >= 0 AND promotions_cents <= platform_cents);

-- --- promo codes --------------------------------------------------------------

-- Made by admins: a credit amount or free minutes (valued at the reading's rate,
-- at most max_cents_per_minute each, when the next reading is accepted), a
-- validity window, a total and a per-client redemption limit.
CREATE TABLE promo_codes (
  id INTEGER PRIMARY KEY,
  code TEXT NOT NULL UNIQUE
    CHECK (length(code) BETWEEN 3 AND 32 AND code = upper(code) AND code NOT GLOB '*[^A-Z0-9-]*'),
  credit_cents INTEGER CHECK (credit_cents IS NULL OR credit_cents BETWEEN 1 AND 100000),
  free_minutes INTEGER CHECK (free_minutes IS NULL OR free_minutes BETWEEN 1 AND 60),
  max_cents_per_minute INTEGER CHECK (max_cents_per_minute IS NULL OR max_cents_per_minute BETWEEN 1 AND 100000),
  credit_valid_days INTEGER NOT NULL CHECK (credit_valid_days BETWEEN 1 AND 366),
  valid_from_ms INTEGER NOT NULL,
  valid_until_ms INTEGER NOT NULL,
  max_redemptions INTEGER NOT NULL CHECK (max_redemptions BETWEEN 1 AND 10000000),
  per_client_limit INTEGER NOT NULL CHECK (per_client_limit BETWEEN 1 AND 100),
  redemptions_count INTEGER NOT NULL DEFAULT 0 CHECK (redemptions_count BETWEEN 0 AND max_redemptions),
  note TEXT CHECK (note IS NULL OR length(note) <= 500),
  disabled_at_ms INTEGER,
  created_by_user_id INTEGER NOT NULL REFERENCES users (id),
  created_at_ms INTEGER NOT NULL,
  CHECK (valid_until_ms > valid_from_ms),
  CHECK ((credit_cents IS NULL) <> (free_minutes IS NULL)),
  CHECK ((free_minutes IS NULL) = (max_cents_per_minute IS NULL))
);

-- Admin list, newest first.
CREATE INDEX promo_codes_by_time ON promo_codes (created_at_ms, id);

-- Only the count moves (one at a time, by a redemption) and a code is
-- disabled once; the terms never change.
CREATE TRIGGER promo_codes_fixed_terms
BEFORE UPDATE ON promo_codes
WHEN NEW.id <> OLD.id OR NEW.code <> OLD.code OR NEW.credit_cents IS NOT OLD.credit_cents
  OR NEW.free_minutes IS NOT OLD.free_minutes OR NEW.max_cents_per_minute IS NOT OLD.max_cents_per_minute
  OR NEW.credit_valid_days <> OLD.credit_valid_days OR NEW.valid_from_ms <> OLD.valid_from_ms
  OR NEW.valid_until_ms <> OLD.valid_until_ms OR NEW.max_redemptions <> OLD.max_redemptions
  OR NEW.per_client_limit <> OLD.per_client_limit OR NEW.created_by_user_id <> OLD.created_by_user_id
  OR NEW.created_at_ms <> OLD.created_at_ms OR NEW.note IS NOT OLD.note
  OR NEW.redemptions_count NOT IN (OLD.redemptions_count, OLD.redemptions_count + 1)
  OR (OLD.disabled_at_ms IS NOT NULL AND NEW.disabled_at_ms IS NOT OLD.disabled_at_ms)
BEGIN
  SELECT RAISE(ABORT, 'promo_code_terms_fixed');
END;

CREATE TRIGGER promo_codes_no_delete
BEFORE DELETE ON promo_codes
BEGIN
  SELECT RAISE(ABORT, 'promo_code_terms_fixed');
END;

CREATE TABLE promo_redemptions (
  id INTEGER PRIMARY KEY,
  promo_code_id INTEGER NOT NULL REFERENCES promo_codes (id),
  client_id INTEGER NOT NULL REFERENCES users (id),
  redeemed_at_ms INTEGER NOT NULL
);

CREATE INDEX promo_redemptions_by_code_client ON promo_redemptions (promo_code_id, client_id);

-- The limits, judged by the redeeming INSERT itself: D1 runs one statement at
-- a time on the primary, so two concurrent redemptions are counted one after
-- the other and the second sees the first (the count's CHECK <= max is a
-- second guard).
CREATE TRIGGER promo_redemptions_check
BEFORE INSERT ON promo_redemptions
BEGIN
  SELECT RAISE(ABORT, 'promo_code_not_found')
  WHERE NOT EXISTS (SELECT 1 FROM promo_codes WHERE id = NEW.promo_code_id);
  SELECT RAISE(ABORT, 'promo_code_disabled')
  FROM promo_codes c WHERE c.id = NEW.promo_code_id AND c.disabled_at_ms IS NOT NULL;
  SELECT RAISE(ABORT, 'promo_code_not_started')
  FROM promo_codes c WHERE c.id = NEW.promo_code_id AND NEW.redeemed_at_ms < c.valid_from_ms;
  SELECT RAISE(ABORT, 'promo_code_expired')
  FROM promo_codes c WHERE c.id = NEW.promo_code_id AND NEW.redeemed_at_ms >= c.valid_until_ms;
  SELECT RAISE(ABORT, 'promo_code_exhausted')
  FROM promo_codes c WHERE c.id = NEW.promo_code_id AND c.redemptions_count >= c.max_redemptions;
  SELECT RAISE(ABORT, 'promo_code_limit_reached')
  FROM promo_codes c
  WHERE c.id = NEW.promo_code_id
    AND (SELECT count(*) FROM promo_redemptions r
         WHERE r.promo_code_id = NEW.promo_code_id AND r.client_id = NEW.client_id) >= c.per_client_limit;
END;

CREATE TRIGGER promo_redemptions_count
AFTER INSERT ON promo_redemptions
BEGIN
  UPDATE promo_codes SET redemptions_count = redemptions_count + 1 WHERE id = NEW.promo_code_id;
END;

CREATE TRIGGER promo_redemptions_no_update
BEFORE UPDATE ON promo_redemptions
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

CREATE TRIGGER promo_redemptions_no_delete
BEFORE DELETE ON promo_redemptions
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

-- --- free-minute offers ---------------------------------------------------------

-- N free minutes, turned into promo credit (N x the reading's rate, at most
-- max_cents_per_minute a minute) when a reading is accepted: the new-client
-- offer (made bound to the client's first accepted reading, once per client:
-- the partial UNIQUE index) or a promo code's (pending until the client's next
-- accepted reading, or its expiry). One offer per reading (UNIQUE reading_id).
CREATE TABLE free_minute_offers (
  id INTEGER PRIMARY KEY,
  client_id INTEGER NOT NULL REFERENCES users (id),
  source TEXT NOT NULL CHECK (source IN ('new_client', 'promo_code')),
  redemption_id INTEGER UNIQUE REFERENCES promo_redemptions (id),
  minutes INTEGER NOT NULL CHECK (minutes BETWEEN 1 AND 60),
  max_cents_per_minute INTEGER NOT NULL CHECK (max_cents_per_minute BETWEEN 1 AND 100000),
  -- new_client: the eligibility rule in force (NEW_CLIENT_OFFER_REQUIRES_DEPOSIT).
  requires_deposit INTEGER NOT NULL DEFAULT 0 CHECK (requires_deposit IN (0, 1)),
  created_at_ms INTEGER NOT NULL,
  expires_at_ms INTEGER NOT NULL,
  reading_id INTEGER UNIQUE REFERENCES readings (id),
  used_at_ms INTEGER,
  CHECK (expires_at_ms > created_at_ms),
  CHECK ((source = 'promo_code') = (redemption_id IS NOT NULL)),
  CHECK ((reading_id IS NULL) = (used_at_ms IS NULL))
);

CREATE UNIQUE INDEX free_minute_offers_new_client_once ON free_minute_offers (client_id) WHERE source = 'new_client';
CREATE INDEX free_minute_offers_pending ON free_minute_offers (client_id, expires_at_ms, id) WHERE reading_id IS NULL;

-- A new-client offer is made only for the client's first accepted reading
-- (the accept in the same batch ran first), and, when the rule says so, only
-- for a client with a card deposit. A promo code's offer comes from a
-- redemption of that client of a free-minutes code, with its terms.
CREATE TRIGGER free_minute_offers_check
BEFORE INSERT ON free_minute_offers
BEGIN
  SELECT RAISE(ABORT, 'offer_not_eligible')
  WHERE NEW.source = 'new_client' AND (
        NEW.reading_id IS NULL OR NEW.used_at_ms > NEW.expires_at_ms
     OR NOT EXISTS (SELECT 1 FROM readings r WHERE r.id = NEW.reading_id AND r.client_id = NEW.client_id
                    AND r.status = 'active' AND r.accepted_at_ms = NEW.used_at_ms)
     OR EXISTS (SELECT 1 FROM readings r WHERE r.client_id = NEW.client_id AND r.accepted_at_ms IS NOT NULL
                AND r.id <> NEW.reading_id)
     OR (NEW.requires_deposit = 1 AND NOT EXISTS (
           SELECT 1 FROM payments p WHERE p.user_id = NEW.client_id AND p.status IN ('approved', 'refunded'))));
  SELECT RAISE(ABORT, 'offer_not_eligible')
  WHERE NEW.source = 'promo_code' AND (
        NEW.reading_id IS NOT NULL
     OR NOT EXISTS (SELECT 1 FROM promo_redemptions d JOIN promo_codes c ON c.id = d.promo_code_id
                    WHERE d.id = NEW.redemption_id AND d.client_id = NEW.client_id
                      AND c.free_minutes = NEW.minutes AND c.max_cents_per_minute = NEW.max_cents_per_minute));
END;

-- A pending offer is used once, on an accepted reading of its client, before it expires.
CREATE TRIGGER free_minute_offers_use
BEFORE UPDATE ON free_minute_offers
BEGIN
  SELECT RAISE(ABORT, 'offer_not_usable')
  WHERE OLD.reading_id IS NOT NULL OR NEW.reading_id IS NULL
     OR NEW.id <> OLD.id OR NEW.client_id <> OLD.client_id OR NEW.source <> OLD.source
     OR NEW.redemption_id IS NOT OLD.redemption_id OR NEW.minutes <> OLD.minutes
     OR NEW.max_cents_per_minute <> OLD.max_cents_per_minute OR NEW.requires_deposit <> OLD.requires_deposit
     OR NEW.created_at_ms <> OLD.created_at_ms OR NEW.expires_at_ms <> OLD.expires_at_ms
     OR NEW.used_at_ms >= OLD.expires_at_ms
     OR NOT EXISTS (SELECT 1 FROM readings r WHERE r.id = NEW.reading_id AND r.client_id = OLD.client_id
                    AND r.status = 'active' AND r.accepted_at_ms = NEW.used_at_ms);
END;

CREATE TRIGGER free_minute_offers_no_delete
BEFORE DELETE ON free_minute_offers
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

-- --- satisfaction claims --------------------------------------------------------

-- Credit for a reading the client was not happy with, paid as promo credit.
-- A client's claim carries the policy it was judged by (window, cap, period,
-- claims per period: Settings at the time); an admin's grant is judged by none
-- of those but the amount the client really paid. One per reading.
CREATE TABLE satisfaction_claims (
  id INTEGER PRIMARY KEY,
  reading_id INTEGER NOT NULL UNIQUE REFERENCES readings (id),
  client_id INTEGER NOT NULL REFERENCES users (id),
  advisor_id INTEGER NOT NULL REFERENCES users (id),
  origin TEXT NOT NULL CHECK (origin IN ('client', 'admin')),
  amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
  -- Taken back from the advisor's pending earnings (SATISFACTION_CLAWBACK), same batch.
  clawback_cents INTEGER NOT NULL DEFAULT 0 CHECK (clawback_cents >= 0 AND clawback_cents <= amount_cents),
  reason TEXT NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
  window_seconds INTEGER,
  max_cents INTEGER,
  period_days INTEGER,
  claims_per_period INTEGER,
  requested_by_user_id INTEGER NOT NULL REFERENCES users (id),
  created_at_ms INTEGER NOT NULL,
  CHECK ((origin = 'client') = (window_seconds IS NOT NULL AND max_cents IS NOT NULL
                                AND period_days IS NOT NULL AND claims_per_period IS NOT NULL))
);

CREATE INDEX satisfaction_claims_by_client ON satisfaction_claims (client_id, created_at_ms) WHERE origin = 'client';

-- Paid cents of a reading: what the wallet paid for its minutes, less what
-- refunds gave back to the wallet.
CREATE TRIGGER satisfaction_claims_check
BEFORE INSERT ON satisfaction_claims
BEGIN
  SELECT RAISE(ABORT, 'reading_not_claimable')
  WHERE NOT EXISTS (SELECT 1 FROM readings r WHERE r.id = NEW.reading_id AND r.client_id = NEW.client_id
                    AND r.advisor_id = NEW.advisor_id AND r.status = 'ended')
     OR (SELECT coalesce(sum(amount_cents - promo_cents), 0) FROM reading_charges WHERE reading_id = NEW.reading_id)
        - (SELECT coalesce(sum(amount_cents - promo_cents), 0) FROM reading_refunds WHERE reading_id = NEW.reading_id)
        <= 0;
  SELECT RAISE(ABORT, 'claim_window_closed')
  FROM readings r
  WHERE NEW.origin = 'client' AND r.id = NEW.reading_id
    AND NEW.created_at_ms > r.ended_at_ms + NEW.window_seconds * 1000;
  SELECT RAISE(ABORT, 'claim_limit_reached')
  WHERE NEW.origin = 'client'
    AND (SELECT count(*) FROM satisfaction_claims c
         WHERE c.client_id = NEW.client_id AND c.origin = 'client'
           AND c.created_at_ms > NEW.created_at_ms - NEW.period_days * 86400000) >= NEW.claims_per_period;
  SELECT RAISE(ABORT, 'claim_exceeds_paid')
  WHERE (NEW.origin = 'client' AND NEW.amount_cents > NEW.max_cents)
     OR NEW.amount_cents >
        (SELECT coalesce(sum(amount_cents - promo_cents), 0) FROM reading_charges WHERE reading_id = NEW.reading_id)
        - (SELECT coalesce(sum(amount_cents - promo_cents), 0) FROM reading_refunds WHERE reading_id = NEW.reading_id);
END;

CREATE TRIGGER satisfaction_claims_no_update
BEFORE UPDATE ON satisfaction_claims
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

CREATE TRIGGER satisfaction_claims_no_delete
BEFORE DELETE ON satisfaction_claims
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

-- --- promo grants ---------------------------------------------------------------

CREATE TABLE promo_grants (
  id INTEGER PRIMARY KEY,
  client_id INTEGER NOT NULL REFERENCES users (id),
  -- promo_code: a credit code redeemed; free_minutes: an offer used on an
  -- accepted reading; satisfaction: a claim or an admin's grant; reading_refund:
  -- promo-paid cents a refund gave back.
  source TEXT NOT NULL CHECK (source IN ('promo_code', 'free_minutes', 'satisfaction', 'reading_refund')),
  -- The transfer that credited it (promo_grant, satisfaction_credit or reading_refund).
  transfer_id INTEGER NOT NULL UNIQUE REFERENCES transfers (id),
  redemption_id INTEGER UNIQUE REFERENCES promo_redemptions (id),
  offer_id INTEGER UNIQUE REFERENCES free_minute_offers (id),
  claim_id INTEGER UNIQUE REFERENCES satisfaction_claims (id),
  reading_id INTEGER REFERENCES readings (id),
  amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
  remaining_cents INTEGER NOT NULL CHECK (remaining_cents >= 0 AND remaining_cents <= amount_cents),
  expired_cents INTEGER NOT NULL DEFAULT 0 CHECK (expired_cents >= 0 AND expired_cents <= amount_cents),
  granted_at_ms INTEGER NOT NULL,
  expires_at_ms INTEGER NOT NULL,
  -- The last transfer that moved remaining_cents (each move names its own).
  last_transfer_id INTEGER NOT NULL REFERENCES transfers (id),
  CHECK (expires_at_ms > granted_at_ms),
  CHECK ((source = 'promo_code') = (redemption_id IS NOT NULL)),
  CHECK ((source = 'free_minutes') = (offer_id IS NOT NULL)),
  CHECK ((source = 'satisfaction') = (claim_id IS NOT NULL))
);

-- FIFO spending and the promo balance of a client: its live grants in order.
CREATE INDEX promo_grants_live ON promo_grants (client_id, expires_at_ms, id) WHERE remaining_cents > 0;
-- The cron's expiry sweep, oldest expiry first.
CREATE INDEX promo_grants_expiring ON promo_grants (expires_at_ms) WHERE remaining_cents > 0;
-- The grants a charge moved (reading_charges_check).
CREATE INDEX promo_grants_by_last_transfer ON promo_grants (last_transfer_id);
CREATE INDEX promo_grants_by_reading ON promo_grants (reading_id) WHERE reading_id IS NOT NULL;

-- A grant is made by its own unposted transfer of the matching kind, whole
-- (remaining = amount), from what its source says.
CREATE TRIGGER promo_grants_check_insert
BEFORE INSERT ON promo_grants
BEGIN
  SELECT RAISE(ABORT, 'promo_grant_mismatch')
  WHERE NEW.remaining_cents <> NEW.amount_cents OR NEW.expired_cents <> 0
     OR NEW.last_transfer_id <> NEW.transfer_id
     OR NOT EXISTS (
       SELECT 1 FROM transfers t WHERE t.id = NEW.transfer_id AND t.posted = 0 AND t.created_at_ms = NEW.granted_at_ms
         AND t.kind = CASE NEW.source WHEN 'satisfaction' THEN 'satisfaction_credit'
                                      WHEN 'reading_refund' THEN 'reading_refund' ELSE 'promo_grant' END);
  SELECT RAISE(ABORT, 'promo_grant_mismatch')
  WHERE NEW.source = 'promo_code' AND NOT EXISTS (
    SELECT 1 FROM promo_redemptions d JOIN promo_codes c ON c.id = d.promo_code_id
    WHERE d.id = NEW.redemption_id AND d.client_id = NEW.client_id AND c.credit_cents = NEW.amount_cents
      AND NEW.expires_at_ms = d.redeemed_at_ms + c.credit_valid_days * 86400000);
  SELECT RAISE(ABORT, 'promo_grant_mismatch')
  WHERE NEW.source = 'free_minutes' AND NOT EXISTS (
    SELECT 1 FROM free_minute_offers o JOIN readings r ON r.id = o.reading_id
    WHERE o.id = NEW.offer_id AND o.client_id = NEW.client_id AND r.id = NEW.reading_id
      AND NEW.amount_cents = o.minutes * min(r.rate_cents_per_minute, o.max_cents_per_minute)
      AND NEW.expires_at_ms = r.accepted_at_ms + o.minutes * r.billing_period_seconds * 1000);
  SELECT RAISE(ABORT, 'promo_grant_mismatch')
  WHERE NEW.source = 'satisfaction' AND NOT EXISTS (
    SELECT 1 FROM satisfaction_claims c
    WHERE c.id = NEW.claim_id AND c.client_id = NEW.client_id AND c.amount_cents = NEW.amount_cents
      AND c.reading_id = NEW.reading_id);
  SELECT RAISE(ABORT, 'promo_grant_mismatch')
  WHERE NEW.source = 'reading_refund' AND NOT EXISTS (
    SELECT 1 FROM reading_refunds f JOIN readings r ON r.id = f.reading_id
    WHERE f.transfer_id = NEW.transfer_id AND f.promo_cents = NEW.amount_cents
      AND r.id = NEW.reading_id AND r.client_id = NEW.client_id);
END;

-- remaining_cents only goes down, each time by a new unposted transfer: a
-- reading charge (whose row checks order and validity, reading_charges_check)
-- or the expiry, which takes all that is left, once the grant has expired.
CREATE TRIGGER promo_grants_check_update
BEFORE UPDATE ON promo_grants
BEGIN
  SELECT RAISE(ABORT, 'promo_grant_append_only')
  WHERE NEW.id <> OLD.id OR NEW.client_id <> OLD.client_id OR NEW.source <> OLD.source
     OR NEW.transfer_id <> OLD.transfer_id OR NEW.redemption_id IS NOT OLD.redemption_id
     OR NEW.offer_id IS NOT OLD.offer_id OR NEW.claim_id IS NOT OLD.claim_id
     OR NEW.reading_id IS NOT OLD.reading_id OR NEW.amount_cents <> OLD.amount_cents
     OR NEW.granted_at_ms <> OLD.granted_at_ms OR NEW.expires_at_ms <> OLD.expires_at_ms
     OR NEW.remaining_cents >= OLD.remaining_cents OR NEW.last_transfer_id = OLD.last_transfer_id
     OR NOT EXISTS (SELECT 1 FROM transfers t WHERE t.id = NEW.last_transfer_id AND t.posted = 0
                    AND t.kind IN ('reading_charge', 'promo_expiry'));
  SELECT RAISE(ABORT, 'promo_grant_append_only')
  FROM transfers t
  WHERE t.id = NEW.last_transfer_id AND (
        (t.kind = 'reading_charge' AND NEW.expired_cents <> OLD.expired_cents)
     OR (t.kind = 'promo_expiry' AND (NEW.remaining_cents <> 0 OR t.created_at_ms < OLD.expires_at_ms
                                      OR NEW.expired_cents <> OLD.expired_cents + OLD.remaining_cents)));
END;

CREATE TRIGGER promo_grants_no_delete
BEFORE DELETE ON promo_grants
BEGIN
  SELECT RAISE(ABORT, 'promo_grant_append_only');
END;

-- --- the ledger's promo rules ---------------------------------------------------

-- One scan of the transfer's entries judges both rules (the in-step sum is
-- computed only for a client_promo leg: AND stops at its left side).
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
               sum(a.kind = 'client_promo'
                   AND a.balance_cents <> (SELECT coalesce(sum(g.remaining_cents), 0) FROM promo_grants g
                                           WHERE g.client_id = a.owner_user_id AND g.remaining_cents > 0))
                 AS out_of_step
        FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
        WHERE e.transfer_id = NEW.id) s;
END;

-- --- the minute charge, promo-aware ---------------------------------------------

-- destructive-ok: recreated just below with the promo split (same name, same first check)
DROP TRIGGER reading_charges_check;
-- destructive-ok: recreated unchanged just below, so the two fire in the order 0090 made them
DROP TRIGGER reading_charges_presence;

-- Minute k is charged only while the reading is active, right after minute
-- k-1, at the reading's rate, by a posted reading_charge transfer of this
-- reading whose legs are exactly the split above for promo_cents (promo_cents
-- from the client's promo account, the rest from its wallet); the grants it
-- drew were valid when the minute began and were drawn in order; and the
-- wallet paid only if no grant valid then still holds credit.
CREATE TRIGGER reading_charges_check
BEFORE INSERT ON reading_charges
BEGIN
  SELECT RAISE(ABORT, 'reading_not_billable')
  WHERE NOT EXISTS (
    SELECT 1 FROM readings r
    WHERE r.id = NEW.reading_id
      AND r.status = 'active'
      AND r.billed_minutes = NEW.minute - 1
      AND r.rate_cents_per_minute = NEW.amount_cents);
  SELECT RAISE(ABORT, 'reading_charge_transfer_mismatch')
  WHERE NOT EXISTS (
    SELECT 1 FROM transfers t
    WHERE t.id = NEW.transfer_id AND t.kind = 'reading_charge' AND t.posted = 1
      AND t.reference_type = 'reading' AND t.reference_id = NEW.reading_id)
  OR EXISTS (
    SELECT 1 FROM (
      SELECT r.advisor_cents_per_minute AS a,
             coalesce(r.promo_advisor_cents_per_minute, r.advisor_cents_per_minute) AS ap,
             coalesce(sum(CASE WHEN a.kind = 'client_wallet' AND a.owner_user_id = r.client_id
                               THEN e.amount_cents END), 0) AS wallet,
             coalesce(sum(CASE WHEN a.kind = 'client_promo' AND a.owner_user_id = r.client_id
                               THEN e.amount_cents END), 0) AS promo,
             coalesce(sum(CASE WHEN a.kind = 'advisor_earnings' AND a.owner_user_id = r.advisor_id
                               THEN e.amount_cents END), 0) AS advisor,
             coalesce(sum(CASE WHEN a.id = 1 THEN e.amount_cents END), 0) AS revenue,
             coalesce(sum(CASE WHEN a.id = 3 THEN e.amount_cents END), 0) AS promotions,
             coalesce(sum(CASE WHEN (a.kind IN ('client_wallet', 'client_promo') AND a.owner_user_id = r.client_id)
                                 OR (a.kind = 'advisor_earnings' AND a.owner_user_id = r.advisor_id)
                                 OR a.id IN (1, 3) THEN 0 ELSE 1 END), 0) AS stray
      FROM readings r
      JOIN ledger_entries e ON e.transfer_id = NEW.transfer_id
      JOIN accounts a ON a.id = e.account_id
      WHERE r.id = NEW.reading_id) s
    WHERE s.stray <> 0
       OR s.wallet <> NEW.promo_cents - NEW.amount_cents
       OR s.promo <> -NEW.promo_cents
       OR s.advisor <> s.a - s.a * NEW.promo_cents / NEW.amount_cents + s.ap * NEW.promo_cents / NEW.amount_cents
       OR s.promotions <> NEW.promo_cents - s.ap * NEW.promo_cents / NEW.amount_cents
       OR s.revenue <> NEW.amount_cents - s.advisor - s.promotions);
  SELECT RAISE(ABORT, 'promo_not_first')
  FROM readings r
  WHERE r.id = NEW.reading_id AND NEW.promo_cents < NEW.amount_cents
    AND EXISTS (SELECT 1 FROM promo_grants g
                WHERE g.client_id = r.client_id AND g.remaining_cents > 0
                  AND g.expires_at_ms > r.accepted_at_ms + (NEW.minute - 1) * r.billing_period_seconds * 1000);
  SELECT RAISE(ABORT, 'promo_grant_order')
  FROM promo_grants u JOIN readings r ON r.id = NEW.reading_id
  WHERE u.last_transfer_id = NEW.transfer_id
    AND (u.client_id <> r.client_id
         OR u.expires_at_ms <= r.accepted_at_ms + (NEW.minute - 1) * r.billing_period_seconds * 1000
         OR EXISTS (SELECT 1 FROM promo_grants g
                    WHERE g.client_id = u.client_id AND g.remaining_cents > 0 AND g.id <> u.id
                      AND g.expires_at_ms > r.accepted_at_ms + (NEW.minute - 1) * r.billing_period_seconds * 1000
                      AND (g.expires_at_ms < u.expires_at_ms OR (g.expires_at_ms = u.expires_at_ms AND g.id < u.id))));
END;

-- As in 0040 and 0090, unchanged.
CREATE TRIGGER reading_charges_presence
BEFORE INSERT ON reading_charges
BEGIN
  SELECT RAISE(ABORT, 'reading_party_silent')
  FROM readings r LEFT JOIN transfers t ON t.id = NEW.transfer_id
  WHERE r.id = NEW.reading_id AND r.status = 'active' AND r.billed_minutes = NEW.minute - 1
    AND ((NEW.charged_at_ms - min(coalesce(r.client_heartbeat_at_ms, r.accepted_at_ms),
                                  coalesce(r.advisor_heartbeat_at_ms, r.accepted_at_ms))
            > r.heartbeat_timeout_seconds * 1000
          AND r.accepted_at_ms + (NEW.minute - 1) * r.billing_period_seconds * 1000
            > min(coalesce(r.client_heartbeat_at_ms, r.accepted_at_ms),
                  coalesce(r.advisor_heartbeat_at_ms, r.accepted_at_ms)))
      OR (t.requested_by_user_id = r.advisor_id
          AND r.accepted_at_ms + (NEW.minute - 1) * r.billing_period_seconds * 1000
            > coalesce(r.client_heartbeat_at_ms, r.accepted_at_ms)));
END;
