-- The money: a double-entry, append-only ledger.
--
-- accounts.balance_cents is the O(1) balance; every entry also keeps the
-- account's balance after it and a per-account sequence number (audit trail).
-- An entry is inserted with INSERT ... SELECT from its account row, so the
-- balance-after and sequence are computed by SQL inside the batch; the
-- triggers below then move the account forward and refuse anything that
-- would break an invariant, which rolls the whole batch back.

CREATE TABLE accounts (
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('client_wallet', 'advisor_earnings', 'platform_revenue', 'gateway_clearing')),
  owner_user_id INTEGER REFERENCES users (id),
  currency TEXT NOT NULL DEFAULT 'USD' CHECK (currency = 'USD'),
  balance_cents INTEGER NOT NULL DEFAULT 0,
  last_sequence INTEGER NOT NULL DEFAULT 0 CHECK (last_sequence >= 0),
  created_at_ms INTEGER NOT NULL,
  CHECK ((owner_user_id IS NULL) = (kind IN ('platform_revenue', 'gateway_clearing'))),
  -- Only the clearing account and client wallets (after a gateway reversal of a
  -- spent deposit, see the entry trigger) may go below zero.
  CHECK (balance_cents >= 0 OR kind IN ('gateway_clearing', 'client_wallet'))
);

CREATE UNIQUE INDEX accounts_by_owner ON accounts (owner_user_id, kind) WHERE owner_user_id IS NOT NULL;
CREATE UNIQUE INDEX accounts_singletons ON accounts (kind) WHERE owner_user_id IS NULL;

INSERT INTO accounts (id, kind, owner_user_id, created_at_ms) VALUES
  (1, 'platform_revenue', NULL, 0),
  (2, 'gateway_clearing', NULL, 0);

CREATE TABLE transfers (
  id INTEGER PRIMARY KEY,
  -- Deterministic key of the movement (e.g. 'reading:123:minute:4'): a second
  -- attempt at the same movement fails on UNIQUE and rolls its batch back.
  transfer_key TEXT NOT NULL UNIQUE CHECK (length(transfer_key) BETWEEN 1 AND 200),
  kind TEXT NOT NULL CHECK (kind IN ('deposit', 'deposit_reversal', 'reading_charge', 'reading_refund', 'adjustment')),
  reference_type TEXT CHECK (reference_type IN ('payment', 'reading', 'webhook_event')),
  reference_id INTEGER,
  requested_by_user_id INTEGER REFERENCES users (id),
  posted INTEGER NOT NULL DEFAULT 0 CHECK (posted IN (0, 1)),
  created_at_ms INTEGER NOT NULL
);

CREATE INDEX transfers_by_reference ON transfers (reference_type, reference_id);

CREATE TABLE ledger_entries (
  id INTEGER PRIMARY KEY,
  transfer_id INTEGER NOT NULL REFERENCES transfers (id),
  account_id INTEGER NOT NULL REFERENCES accounts (id),
  amount_cents INTEGER NOT NULL CHECK (amount_cents <> 0),
  balance_after_cents INTEGER NOT NULL,
  sequence INTEGER NOT NULL CHECK (sequence >= 1),
  created_at_ms INTEGER NOT NULL,
  UNIQUE (account_id, sequence)
);

CREATE INDEX ledger_entries_by_transfer ON ledger_entries (transfer_id);

-- An entry continues its account exactly: next sequence, previous balance + amount.
-- A client wallet may only go below zero through a deposit reversal.
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
    AND (SELECT kind FROM accounts WHERE id = NEW.account_id) = 'client_wallet'
    AND (SELECT kind FROM transfers WHERE id = NEW.transfer_id) <> 'deposit_reversal';
END;

CREATE TRIGGER ledger_entries_move_account
AFTER INSERT ON ledger_entries
BEGIN
  UPDATE accounts
  SET balance_cents = NEW.balance_after_cents, last_sequence = NEW.sequence
  WHERE id = NEW.account_id;
END;

CREATE TRIGGER ledger_entries_no_update
BEFORE UPDATE ON ledger_entries
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

CREATE TRIGGER ledger_entries_no_delete
BEFORE DELETE ON ledger_entries
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

-- Posting closes a transfer: it must have two or more entries summing to zero.
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

-- Card payments through Authorize.Net. Never card data: the gateway's
-- transaction id, the amount and the status only.
CREATE TABLE payments (
  id INTEGER PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users (id),
  amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
  currency TEXT NOT NULL DEFAULT 'USD' CHECK (currency = 'USD'),
  status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'declined', 'error', 'unknown', 'refunded', 'voided')),
  gateway_transaction_id TEXT UNIQUE CHECK (gateway_transaction_id IS NULL OR length(gateway_transaction_id) BETWEEN 1 AND 40),
  gateway_response_code TEXT CHECK (gateway_response_code IS NULL OR length(gateway_response_code) <= 8),
  reversed_cents INTEGER NOT NULL DEFAULT 0 CHECK (reversed_cents BETWEEN 0 AND amount_cents),
  created_at_ms INTEGER NOT NULL,
  updated_at_ms INTEGER NOT NULL
);

CREATE INDEX payments_by_user ON payments (user_id, id);
CREATE INDEX payments_by_status ON payments (status, updated_at_ms);

-- Idempotency-Key records, scoped per user and route, kept >= 24 hours.
CREATE TABLE idempotency_keys (
  user_id INTEGER NOT NULL REFERENCES users (id),
  idempotency_key TEXT NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
  route TEXT NOT NULL CHECK (length(route) <= 80),
  request_sha256 TEXT NOT NULL CHECK (length(request_sha256) = 64),
  state TEXT NOT NULL CHECK (state IN ('pending', 'done')),
  response_status INTEGER,
  response_body TEXT,
  created_at_ms INTEGER NOT NULL,
  expires_at_ms INTEGER NOT NULL,
  PRIMARY KEY (user_id, idempotency_key)
) WITHOUT ROWID;

CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at_ms);

-- Authorize.Net webhook notifications, deduplicated on their notificationId.
CREATE TABLE webhook_events (
  notification_id TEXT PRIMARY KEY CHECK (length(notification_id) BETWEEN 1 AND 64),
  event_type TEXT NOT NULL CHECK (length(event_type) <= 100),
  gateway_transaction_id TEXT,
  payment_id INTEGER REFERENCES payments (id),
  outcome TEXT NOT NULL CHECK (length(outcome) <= 40),
  received_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
