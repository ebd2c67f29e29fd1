-- Advisor payouts (issue 14 item 6): earnings clear after a hold, then leave
-- through PayPal Payouts. The ledger side uses 0090's kinds:
--   earnings_clearance  advisor_earnings (pending) -> advisor_cleared
--   payout              advisor_cleared -> 4 payouts_in_transit (the batch that makes the payout row)
--   payout_settlement   payouts_in_transit -> 5 payout_clearing (PayPal: item SUCCEEDED)
--   payout_return       payouts_in_transit (or payout_clearing, after a success) -> advisor_cleared
-- Each is one D1 batch; the rules below refuse, inside that batch, a movement
-- that does not match its payout or clearance row.

-- Every advisor has both earnings accounts and a clearance cursor from the
-- moment the pending one exists, whichever code path made it (POST /v1/advisors,
-- tests, the seed): the cleared balance is then always one indexed account row.
CREATE TABLE advisor_payout_state (
  advisor_id INTEGER PRIMARY KEY REFERENCES users (id),
  -- Entries of the pending account up to this sequence have been looked at by a
  -- clearance run; the next run scans from here (each entry is read once).
  cleared_through_sequence INTEGER NOT NULL DEFAULT 0 CHECK (cleared_through_sequence >= 0),
  -- When the next clearance run should look at this advisor (0: at once).
  next_clearance_at_ms INTEGER NOT NULL DEFAULT 0,
  -- An automatic payout is due from this time (NULL: none due).
  auto_payout_due_at_ms INTEGER,
  last_payout_at_ms INTEGER,
  updated_at_ms INTEGER NOT NULL
);

CREATE INDEX advisor_payout_state_clearance_due ON advisor_payout_state (next_clearance_at_ms);
CREATE INDEX advisor_payout_state_auto_due ON advisor_payout_state (auto_payout_due_at_ms)
  WHERE auto_payout_due_at_ms IS NOT NULL;

-- The cleared account's id comes from the pending one's, in a range no other id
-- uses: 2**52 + 2**40 + (id mod 2**51), above every ids.new_id() (< 2**52 + 2**40)
-- and every fixed id the seed and the bench choose, below 2**53 (exact in
-- JavaScript). A rowid picked by SQLite (max + 1) could be the next id such a
-- caller sets itself, and its INSERT ... ON CONFLICT DO NOTHING would then
-- silently make no account.
CREATE TRIGGER accounts_advisor_cleared
AFTER INSERT ON accounts
WHEN NEW.kind = 'advisor_earnings'
BEGIN
  INSERT INTO accounts (id, kind, owner_user_id, created_at_ms)
  SELECT 4504699138998272 + (NEW.id % 2251799813685248), 'advisor_cleared', NEW.owner_user_id, NEW.created_at_ms
  WHERE NOT EXISTS (SELECT 1 FROM accounts WHERE owner_user_id = NEW.owner_user_id AND kind = 'advisor_cleared');
  INSERT INTO advisor_payout_state (advisor_id, updated_at_ms)
  SELECT NEW.owner_user_id, NEW.created_at_ms
  WHERE NOT EXISTS (SELECT 1 FROM advisor_payout_state WHERE advisor_id = NEW.owner_user_id);
END;

-- The advisors made before this migration.
INSERT INTO accounts (id, kind, owner_user_id, created_at_ms)
SELECT 4504699138998272 + (e.id % 2251799813685248), 'advisor_cleared', e.owner_user_id, e.created_at_ms FROM accounts e
WHERE e.kind = 'advisor_earnings'
  AND NOT EXISTS (SELECT 1 FROM accounts c WHERE c.owner_user_id = e.owner_user_id AND c.kind = 'advisor_cleared');
INSERT INTO advisor_payout_state (advisor_id, updated_at_ms)
SELECT e.owner_user_id, e.created_at_ms FROM accounts e
WHERE e.kind = 'advisor_earnings'
  AND NOT EXISTS (SELECT 1 FROM advisor_payout_state s WHERE s.advisor_id = e.owner_user_id);

-- One clearance: `amount_cents` of the advisor's pending earnings, aged past
-- the hold, moved to cleared by the transfer `transfer_id`. It was planned on
-- the pending account as it stood at `pending_sequence` (its last entry then);
-- the trigger refuses it if the account moved since (compare-and-swap), and
-- UNIQUE (advisor_id, pending_sequence) makes a second run on the same state
-- fail, so a clearance happens once whatever runs race.
CREATE TABLE earnings_clearances (
  id INTEGER PRIMARY KEY,
  advisor_id INTEGER NOT NULL REFERENCES users (id),
  -- Deferred: the clearance row goes before its transfer in the batch (the
  -- transfer's trigger checks the row), the reference holds at commit.
  transfer_id INTEGER NOT NULL UNIQUE REFERENCES transfers (id) DEFERRABLE INITIALLY DEFERRED,
  amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
  through_sequence INTEGER NOT NULL CHECK (through_sequence >= 1),
  pending_sequence INTEGER NOT NULL CHECK (pending_sequence >= through_sequence),
  cutoff_ms INTEGER NOT NULL,
  created_at_ms INTEGER NOT NULL,
  UNIQUE (advisor_id, pending_sequence)
);

CREATE TRIGGER earnings_clearances_planned_on_current
BEFORE INSERT ON earnings_clearances
BEGIN
  SELECT RAISE(ABORT, 'clearance_stale')
  WHERE (SELECT last_sequence FROM accounts WHERE owner_user_id = NEW.advisor_id AND kind = 'advisor_earnings')
        IS NOT NEW.pending_sequence;
END;

CREATE TRIGGER earnings_clearances_append_only
BEFORE UPDATE ON earnings_clearances
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

CREATE TRIGGER earnings_clearances_no_delete
BEFORE DELETE ON earnings_clearances
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

-- Where an advisor's payouts go: the PayPal receiver (an email or a PayPal
-- payer id), personal data, sealed with AES-GCM under PAYOUT_KEYS (sealing.py;
-- the additional data binds it to the owner and the recipient type). Only the
-- mask (a***@example.com) is readable.
CREATE TABLE payout_methods (
  user_id INTEGER PRIMARY KEY REFERENCES users (id),
  recipient_type TEXT NOT NULL CHECK (recipient_type IN ('EMAIL', 'PAYPAL_ID')),
  receiver_masked TEXT NOT NULL CHECK (length(receiver_masked) BETWEEN 1 AND 80),
  key_version INTEGER NOT NULL CHECK (key_version >= 1),
  iv_b64 TEXT NOT NULL CHECK (length(iv_b64) = 16),
  ciphertext_b64 TEXT NOT NULL CHECK (length(ciphertext_b64) BETWEEN 1 AND 1024),
  version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
  created_at_ms INTEGER NOT NULL,
  updated_at_ms INTEGER NOT NULL
);

CREATE TRIGGER payout_methods_advisors_only
BEFORE INSERT ON payout_methods
WHEN NOT EXISTS (SELECT 1 FROM advisors WHERE user_id = NEW.user_id)
  OR (SELECT erased_at_ms FROM users WHERE id = NEW.user_id) IS NOT NULL
BEGIN
  SELECT RAISE(ABORT, 'payout_method_not_allowed');
END;

-- One payout = one PayPal batch of one item; our id is both its
-- sender_batch_id and its sender_item_id. status:
--   requested  money in transit, PayPal's acceptance not recorded yet (not sent,
--              or the answer was lost: the cron sends again with the same id)
--   sent       PayPal accepted the batch (paypal_batch_id), the item is pending
--   unclaimed  the receiver has no PayPal account yet (PayPal returns it after 30 days)
--   succeeded  paid: settled to payout_clearing
--   failed     refused or failed: back in cleared earnings
--   returned   returned (also after a success): back in cleared earnings
CREATE TABLE payouts (
  id INTEGER PRIMARY KEY,
  advisor_id INTEGER NOT NULL REFERENCES users (id),
  amount_cents INTEGER NOT NULL CHECK (amount_cents > 0 AND amount_cents <= 1000000000),
  currency TEXT NOT NULL DEFAULT 'USD' CHECK (currency = 'USD'),
  status TEXT NOT NULL CHECK (status IN ('requested', 'sent', 'unclaimed', 'succeeded', 'failed', 'returned')),
  origin TEXT NOT NULL CHECK (origin IN ('request', 'schedule')),
  recipient_type TEXT NOT NULL CHECK (recipient_type IN ('EMAIL', 'PAYPAL_ID')),
  receiver_masked TEXT CHECK (length(receiver_masked) <= 80),
  -- The sealed receiver, copied from payout_methods when the payout is made (the
  -- payout goes where it was meant to, whatever the advisor changes later) and
  -- cleared once PayPal has accepted the batch: it is kept only while needed.
  receiver_key_version INTEGER,
  receiver_iv_b64 TEXT,
  receiver_ciphertext_b64 TEXT CHECK (length(receiver_ciphertext_b64) <= 1024),
  paypal_batch_id TEXT UNIQUE CHECK (length(paypal_batch_id) BETWEEN 1 AND 64),
  paypal_item_id TEXT CHECK (length(paypal_item_id) BETWEEN 1 AND 64),
  batch_status TEXT CHECK (length(batch_status) <= 32),
  item_status TEXT CHECK (length(item_status) <= 32),
  failure_code TEXT CHECK (length(failure_code) <= 64),
  attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  -- When the cron may next send (requested) or look up (sent, unclaimed) this payout.
  next_attempt_at_ms INTEGER,
  created_at_ms INTEGER NOT NULL,
  updated_at_ms INTEGER NOT NULL,
  CHECK ((receiver_ciphertext_b64 IS NULL) = (receiver_iv_b64 IS NULL)
         AND (receiver_ciphertext_b64 IS NULL) = (receiver_key_version IS NULL))
);

CREATE INDEX payouts_by_advisor_time ON payouts (advisor_id, created_at_ms, id);
CREATE INDEX payouts_open_by_attempt ON payouts (next_attempt_at_ms)
  WHERE status IN ('requested', 'sent', 'unclaimed');

CREATE TRIGGER payouts_no_erased_advisor
BEFORE INSERT ON payouts
WHEN (SELECT erased_at_ms FROM users WHERE id = NEW.advisor_id) IS NOT NULL
BEGIN
  SELECT RAISE(ABORT, 'user_erased');
END;

CREATE TRIGGER payouts_start_requested
BEFORE INSERT ON payouts
WHEN NEW.status <> 'requested'
BEGIN
  SELECT RAISE(ABORT, 'payout_transition_invalid');
END;

-- The moves a payout can make, and what is fixed about it. A status change is
-- refused unless its money moved in the same batch (before the UPDATE): the
-- settlement for `succeeded`, the return for `failed` and `returned`.
CREATE TRIGGER payouts_fixed_terms
BEFORE UPDATE ON payouts
WHEN NEW.id IS NOT OLD.id OR NEW.advisor_id IS NOT OLD.advisor_id OR NEW.amount_cents IS NOT OLD.amount_cents
  OR NEW.origin IS NOT OLD.origin OR NEW.created_at_ms IS NOT OLD.created_at_ms
  OR (OLD.paypal_batch_id IS NOT NULL AND NEW.paypal_batch_id IS NOT OLD.paypal_batch_id)
BEGIN
  SELECT RAISE(ABORT, 'payout_terms_fixed');
END;

CREATE TRIGGER payouts_transition
BEFORE UPDATE OF status ON payouts
WHEN NEW.status IS NOT OLD.status
BEGIN
  SELECT RAISE(ABORT, 'payout_transition_invalid')
  WHERE NOT ((OLD.status = 'requested' AND NEW.status IN ('sent', 'unclaimed', 'succeeded', 'failed', 'returned'))
          OR (OLD.status = 'sent' AND NEW.status IN ('unclaimed', 'succeeded', 'failed', 'returned'))
          OR (OLD.status = 'unclaimed' AND NEW.status IN ('succeeded', 'failed', 'returned'))
          OR (OLD.status = 'succeeded' AND NEW.status = 'returned'));
  SELECT RAISE(ABORT, 'payout_settlement_missing')
  WHERE NEW.status = 'succeeded'
    AND NOT EXISTS (SELECT 1 FROM transfers WHERE transfer_key = 'payout:' || NEW.id || ':settlement' AND posted = 1);
  SELECT RAISE(ABORT, 'payout_return_missing')
  WHERE NEW.status IN ('failed', 'returned')
    AND NOT EXISTS (SELECT 1 FROM transfers WHERE transfer_key = 'payout:' || NEW.id || ':return' AND posted = 1);
END;

CREATE TRIGGER payouts_no_delete
BEFORE DELETE ON payouts
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

-- A payout's transfers name it, one of each kind at most (the key is UNIQUE):
-- 'payout:<id>' (made with the payout, while it is requested), then
-- 'payout:<id>:settlement' or 'payout:<id>:return'. A return after a
-- settlement is the one allowed second movement; the status trigger above
-- refuses any return or settlement that does not come with its status change.
CREATE TRIGGER transfers_payout_reference
BEFORE INSERT ON transfers
WHEN NEW.kind IN ('payout', 'payout_settlement', 'payout_return')
BEGIN
  SELECT RAISE(ABORT, 'payout_reference_invalid')
  WHERE NEW.reference_type IS NOT 'payout'
     OR NEW.transfer_key IS NOT ('payout:' || NEW.reference_id
                                 || CASE NEW.kind WHEN 'payout' THEN '' WHEN 'payout_settlement' THEN ':settlement'
                                    ELSE ':return' END)
     OR NOT EXISTS (SELECT 1 FROM payouts p WHERE p.id = NEW.reference_id
                      AND (NEW.kind <> 'payout' OR p.status = 'requested'));
END;

CREATE TRIGGER transfers_clearance_reference
BEFORE INSERT ON transfers
WHEN NEW.kind = 'earnings_clearance'
BEGIN
  SELECT RAISE(ABORT, 'clearance_reference_invalid')
  WHERE NEW.reference_type IS NOT 'earnings_clearance'
     OR NOT EXISTS (SELECT 1 FROM earnings_clearances WHERE id = NEW.reference_id AND transfer_id = NEW.id);
END;

-- PayPal's item notifications, by their event id, recorded in the batch that
-- applies them: a redelivery fails on the key and changes nothing.
CREATE TABLE paypal_webhook_events (
  event_id TEXT PRIMARY KEY CHECK (length(event_id) BETWEEN 1 AND 64),
  event_type TEXT NOT NULL CHECK (length(event_type) <= 64),
  payout_id INTEGER REFERENCES payouts (id),
  outcome TEXT NOT NULL CHECK (length(outcome) <= 40),
  received_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Erasure (DELETE /v1/me, migration 0080) removes the payout receiver: the
-- method, and the sealed copy and the mask on the user's payouts. A payout
-- still `requested` then cannot be sent, and the cron returns it.
CREATE TRIGGER users_erased_payout_receiver
AFTER UPDATE OF erased_at_ms ON users
WHEN NEW.erased_at_ms IS NOT NULL AND OLD.erased_at_ms IS NULL
BEGIN
  DELETE FROM payout_methods WHERE user_id = NEW.id;
  UPDATE payouts SET receiver_masked = NULL, receiver_key_version = NULL, receiver_iv_b64 = NULL,
                     receiver_ciphertext_b64 = NULL
  WHERE advisor_id = NEW.id AND receiver_masked IS NOT NULL;
END;
