-- The ledger's vocabulary for money that leaves and money that is promised
-- (issue 14): promotional credit, satisfaction credit, refunds of unused funds
-- to the card, chargebacks, earnings clearance and advisor payouts.
--
-- SQLite cannot alter a CHECK, so accounts and transfers are rebuilt with the
-- longer kind lists (the documented 12-step rebuild: new table, copy, drop,
-- rename). The rows go through a plain copy and back into the renamed table:
-- dropping a parent table counts its children as deferred foreign-key
-- violations, and only re-inserting the parent rows (under the parent's name)
-- counts them off again, so copying into the new table before the rename
-- would leave the migration failing at commit. Triggers on other tables whose bodies name accounts or transfers
-- would make the rename fail ("no such table"), so they are dropped first and
-- recreated after, unchanged except ledger_entries_check_insert, whose
-- overdraft rule now says which transfer kinds may take which accounts below
-- zero. Foreign keys are deferred to the end of the migration, where every
-- reference holds again (the rows are copied with their ids).
--
-- Accounts owned by a user:
--   client_wallet      the client's cash (cards in, charges and refunds out);
--                      below zero only through a deposit reversal or a chargeback
--   client_promo       promotional credit: spent first, never cashed out, never
--                      below zero (CHECK)
--   advisor_earnings   earnings still on hold (pending)
--   advisor_cleared    earnings past the hold, payable; neither advisor account
--                      ever goes below zero (CHECK): a clawback takes at most
--                      what is there
-- Platform singletons (fixed ids):
--   1 platform_revenue, 2 gateway_clearing (card money in and out),
--   3 platform_promotions (funds every promo credit: its negative balance is the
--     promotion cost outstanding), 4 payouts_in_transit (sent to PayPal, not yet
--   final), 5 payout_clearing (paid out through PayPal),
--   6 refunds_in_transit (asked of the card gateway, not yet answered)

PRAGMA defer_foreign_keys = true;

-- destructive-ok: recreated below, after the rebuild (bodies name accounts/transfers)
DROP TRIGGER ledger_entries_check_insert;
-- destructive-ok: recreated below
DROP TRIGGER ledger_entries_move_account;
-- destructive-ok: recreated below
DROP TRIGGER reading_charges_check;
-- destructive-ok: recreated below
DROP TRIGGER reading_charges_presence;

CREATE TABLE accounts_rebuilt (
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN (
    'client_wallet', 'client_promo', 'advisor_earnings', 'advisor_cleared',
    'platform_revenue', 'gateway_clearing', 'platform_promotions',
    'payouts_in_transit', 'payout_clearing', 'refunds_in_transit')),
  owner_user_id INTEGER REFERENCES users (id),
  currency TEXT NOT NULL DEFAULT 'USD' CHECK (currency = 'USD'),
  balance_cents INTEGER NOT NULL DEFAULT 0,
  last_sequence INTEGER NOT NULL DEFAULT 0 CHECK (last_sequence >= 0),
  created_at_ms INTEGER NOT NULL,
  CHECK ((owner_user_id IS NULL) = (kind IN (
    'platform_revenue', 'gateway_clearing', 'platform_promotions',
    'payouts_in_transit', 'payout_clearing', 'refunds_in_transit'))),
  -- Which accounts may go below zero at all; ledger_entries_check_insert says
  -- through which transfers.
  CHECK (balance_cents >= 0 OR kind IN ('gateway_clearing', 'client_wallet', 'platform_promotions'))
);

CREATE TABLE accounts_copy AS SELECT id, kind, owner_user_id, currency, balance_cents, last_sequence, created_at_ms FROM accounts;
-- destructive-ok: the 12-step rebuild; every row is in accounts_copy
DROP TABLE accounts;
-- destructive-ok: the 12-step rebuild
ALTER TABLE accounts_rebuilt RENAME TO accounts;
INSERT INTO accounts (id, kind, owner_user_id, currency, balance_cents, last_sequence, created_at_ms)
SELECT id, kind, owner_user_id, currency, balance_cents, last_sequence, created_at_ms FROM accounts_copy ORDER BY id;
-- destructive-ok: the copy's rows are back in accounts
DROP TABLE accounts_copy;

CREATE UNIQUE INDEX accounts_by_owner ON accounts (owner_user_id, kind) WHERE owner_user_id IS NOT NULL;
CREATE UNIQUE INDEX accounts_singletons ON accounts (kind) WHERE owner_user_id IS NULL;

INSERT INTO accounts (id, kind, owner_user_id, created_at_ms) VALUES
  (3, 'platform_promotions', NULL, 0),
  (4, 'payouts_in_transit', NULL, 0),
  (5, 'payout_clearing', NULL, 0),
  (6, 'refunds_in_transit', NULL, 0);

CREATE TABLE transfers_rebuilt (
  id INTEGER PRIMARY KEY,
  -- Deterministic key of the movement (e.g. 'reading:123:minute:4'): a second
  -- attempt at the same movement fails on UNIQUE and rolls its batch back.
  transfer_key TEXT NOT NULL UNIQUE CHECK (length(transfer_key) BETWEEN 1 AND 200),
  kind TEXT NOT NULL CHECK (kind IN (
    'deposit', 'deposit_reversal', 'reading_charge', 'reading_refund', 'adjustment',
    'promo_grant', 'promo_expiry', 'satisfaction_credit', 'clawback',
    'wallet_refund', 'wallet_refund_settlement', 'wallet_refund_return',
    'chargeback', 'chargeback_reversal',
    'earnings_clearance', 'payout', 'payout_settlement', 'payout_return')),
  reference_type TEXT CHECK (reference_type IN (
    'payment', 'reading', 'webhook_event', 'user',
    'promo_code', 'promo_grant', 'satisfaction_claim', 'wallet_refund',
    'chargeback', 'earnings_clearance', 'payout')),
  reference_id INTEGER,
  requested_by_user_id INTEGER REFERENCES users (id),
  posted INTEGER NOT NULL DEFAULT 0 CHECK (posted IN (0, 1)),
  created_at_ms INTEGER NOT NULL
);

CREATE TABLE transfers_copy AS SELECT id, transfer_key, kind, reference_type, reference_id, requested_by_user_id, posted, created_at_ms FROM transfers;
-- destructive-ok: the 12-step rebuild; every row is in transfers_copy
DROP TABLE transfers;
-- destructive-ok: the 12-step rebuild
ALTER TABLE transfers_rebuilt RENAME TO transfers;
INSERT INTO transfers (id, transfer_key, kind, reference_type, reference_id, requested_by_user_id, posted, created_at_ms)
SELECT id, transfer_key, kind, reference_type, reference_id, requested_by_user_id, posted, created_at_ms FROM transfers_copy ORDER BY id;
-- destructive-ok: the copy's rows are back in transfers
DROP TABLE transfers_copy;

CREATE INDEX transfers_by_reference ON transfers (reference_type, reference_id);
CREATE UNIQUE INDEX transfers_one_credit_per_payment ON transfers (reference_id)
  WHERE kind = 'deposit' AND reference_type = 'payment';

-- The triggers ON transfers went with the old table; as in 0002 and 0010.
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
  WHERE (SELECT count(*) FROM ledger_entries WHERE transfer_id = NEW.id) < 2
     OR (SELECT sum(amount_cents) FROM ledger_entries WHERE transfer_id = NEW.id) <> 0;
END;

CREATE TRIGGER transfers_no_delete
BEFORE DELETE ON transfers
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

CREATE TRIGGER transfers_check_payment_reference
BEFORE INSERT ON transfers
WHEN NEW.kind IN ('deposit', 'deposit_reversal') AND (NEW.kind = 'deposit_reversal' OR NEW.reference_type IS NOT NULL)
BEGIN
  SELECT RAISE(ABORT, 'payment_not_approved')
  WHERE NEW.reference_type IS NOT 'payment'
     OR NOT EXISTS (SELECT 1 FROM payments WHERE id = NEW.reference_id AND status = 'approved');
END;

-- As in 0002, except the overdraft rule: a client wallet goes below zero only
-- through a deposit reversal or a chargeback (before: a deposit reversal);
-- every other account's sign is its CHECK's. The lookups run only for a debit that would
-- end below zero.
CREATE TRIGGER ledger_entries_check_insert
BEFORE INSERT ON ledger_entries
BEGIN
  SELECT RAISE(ABORT, 'ledger_transfer_posted')
  WHERE (SELECT posted FROM transfers WHERE id = NEW.transfer_id) <> 0;
  SELECT RAISE(ABORT, 'ledger_sequence_mismatch')
  WHERE NOT EXISTS (
    SELECT 1 FROM accounts
    WHERE id = NEW.account_id
      AND last_sequence = NEW.sequence - 1
      AND balance_cents + NEW.amount_cents = NEW.balance_after_cents
  );
  SELECT RAISE(ABORT, 'insufficient_funds')
  WHERE NEW.amount_cents < 0
    AND NEW.balance_after_cents < 0
    AND (SELECT CASE
               WHEN a.kind = 'client_wallet' THEN t.kind NOT IN ('deposit_reversal', 'chargeback')
               ELSE 0
             END
         FROM accounts a, transfers t
         WHERE a.id = NEW.account_id AND t.id = NEW.transfer_id);
END;

CREATE TRIGGER ledger_entries_move_account
AFTER INSERT ON ledger_entries
BEGIN
  UPDATE accounts
  SET balance_cents = NEW.balance_after_cents, last_sequence = NEW.sequence
  WHERE id = NEW.account_id;
END;

-- As in 0020 and 0040, unchanged.
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
    JOIN ledger_entries e ON e.transfer_id = t.id
    JOIN accounts a ON a.id = e.account_id
    JOIN readings r ON r.id = NEW.reading_id
    WHERE t.id = NEW.transfer_id AND t.kind = 'reading_charge' AND t.posted = 1
      AND t.reference_type = 'reading' AND t.reference_id = NEW.reading_id
      AND a.kind = 'client_wallet' AND a.owner_user_id = r.client_id
      AND e.amount_cents = -NEW.amount_cents);
END;

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
