-- Card money that goes back (issue 14 items 4 and 5): refunds of unused wallet
-- funds to the card through Authorize.Net, and chargebacks recorded by admins.
-- The ledger's kinds are 0090's (wallet_refund, wallet_refund_settlement,
-- wallet_refund_return, chargeback, chargeback_reversal, clawback); this adds
-- the records those transfers name and the rules that bind them.

-- What a deposit has given back so far, beside reversed_cents (the gateway's
-- own refunds and voids, from its webhooks): refunded_cents = our wallet
-- refunds reserved or settled against it (a returned one gives its part
-- back), charged_back_cents = open or lost chargebacks. Together they never
-- exceed what was charged, whichever path writes first.
ALTER TABLE payments ADD COLUMN refunded_cents INTEGER NOT NULL DEFAULT 0
  CHECK (refunded_cents >= 0);
ALTER TABLE payments ADD COLUMN charged_back_cents INTEGER NOT NULL DEFAULT 0
  CHECK (charged_back_cents >= 0 AND reversed_cents + refunded_cents + charged_back_cents <= amount_cents);

-- The deposits a refund may draw on, newest first (wallet_refunds.py).
CREATE INDEX payments_approved_by_user_time ON payments (user_id, created_at_ms) WHERE status = 'approved';

-- Chargebacks. A row per dispute the card network reported against one deposit
-- (Authorize.Net does not send them as webhooks: an admin records them).
-- advisor_side is the configuration in force when it was recorded:
-- 'platform' (the platform bears the loss) or 'clawback' (advisors' pending
-- earnings from the client's readings since the deposit give back their share,
-- at most what each advisor holds; clawback_cents in total). While a
-- chargeback is open its client can start no reading, make no deposit and ask
-- for no refund. Resolved: 'won' (the money came back: a chargeback_reversal)
-- or 'lost' (it stays gone); either lifts the hold.
CREATE TABLE chargebacks (
  id INTEGER PRIMARY KEY,
  payment_id INTEGER NOT NULL REFERENCES payments (id),
  user_id INTEGER NOT NULL REFERENCES users (id),
  amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
  reason_code TEXT CHECK (reason_code IS NULL OR length(reason_code) BETWEEN 1 AND 16),
  note TEXT NOT NULL CHECK (length(note) BETWEEN 1 AND 500),
  advisor_side TEXT NOT NULL CHECK (advisor_side IN ('platform', 'clawback')),
  clawback_cents INTEGER NOT NULL DEFAULT 0 CHECK (clawback_cents BETWEEN 0 AND amount_cents),
  state TEXT NOT NULL CHECK (state IN ('open', 'won', 'lost')),
  recorded_by_user_id INTEGER NOT NULL REFERENCES users (id),
  resolved_by_user_id INTEGER REFERENCES users (id),
  resolution_note TEXT CHECK (resolution_note IS NULL OR length(resolution_note) BETWEEN 1 AND 500),
  created_at_ms INTEGER NOT NULL,
  resolved_at_ms INTEGER,
  CHECK ((state = 'open') = (resolved_at_ms IS NULL)),
  CHECK ((state = 'open') = (resolved_by_user_id IS NULL)),
  CHECK (advisor_side = 'clawback' OR clawback_cents = 0)
);

CREATE INDEX chargebacks_open_by_user ON chargebacks (user_id) WHERE state = 'open';
CREATE INDEX chargebacks_by_payment ON chargebacks (payment_id);

-- Recorded against the client's own approved deposit, never beyond what is left
-- of it (the payments CHECK above, in the same batch).
CREATE TRIGGER chargebacks_check_insert
BEFORE INSERT ON chargebacks
BEGIN
  SELECT RAISE(ABORT, 'chargeback_payment_invalid')
  WHERE NEW.state <> 'open'
     OR NOT EXISTS (SELECT 1 FROM payments WHERE id = NEW.payment_id AND user_id = NEW.user_id AND status = 'approved');
END;

-- Only open -> won | lost, once; nothing else about a chargeback changes.
CREATE TRIGGER chargebacks_check_update
BEFORE UPDATE ON chargebacks
BEGIN
  SELECT RAISE(ABORT, 'chargeback_not_open')
  WHERE OLD.state <> 'open' OR NEW.state NOT IN ('won', 'lost');
  SELECT RAISE(ABORT, 'ledger_append_only')
  WHERE NEW.id <> OLD.id OR NEW.payment_id <> OLD.payment_id OR NEW.user_id <> OLD.user_id
     OR NEW.amount_cents <> OLD.amount_cents OR NEW.reason_code IS NOT OLD.reason_code OR NEW.note <> OLD.note
     OR NEW.advisor_side <> OLD.advisor_side OR NEW.clawback_cents <> OLD.clawback_cents
     OR NEW.recorded_by_user_id <> OLD.recorded_by_user_id OR NEW.created_at_ms <> OLD.created_at_ms;
END;

CREATE TRIGGER chargebacks_no_delete
BEFORE DELETE ON chargebacks
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

-- Each chargeback's money moves once per kind (the transfer keys
-- chargeback:<id>, chargeback:<id>:clawback, chargeback:<id>:reversal are
-- UNIQUE): the chargeback and its clawback while it is open (the row goes
-- first in the batch), the reversal only once it is won (the UPDATE goes first).
CREATE TRIGGER transfers_check_chargeback_reference
BEFORE INSERT ON transfers
WHEN NEW.kind IN ('chargeback', 'chargeback_reversal') OR NEW.reference_type = 'chargeback'
BEGIN
  SELECT RAISE(ABORT, 'chargeback_transfer_mismatch')
  WHERE NEW.reference_type IS NOT 'chargeback'
     OR NEW.kind NOT IN ('chargeback', 'chargeback_reversal', 'clawback')
     OR NOT EXISTS (SELECT 1 FROM chargebacks c WHERE c.id = NEW.reference_id
                    AND c.state = CASE NEW.kind WHEN 'chargeback_reversal' THEN 'won' ELSE 'open' END
                    AND (NEW.kind <> 'clawback' OR c.clawback_cents > 0));
END;

-- The hold: no new reading, no new deposit claim while a chargeback is open
-- (the readings and payments INSERTs of readings.py and payments.py abort,
-- answered 403 chargeback_hold). Readings already open go on, like
-- self-exclusion (0071): the client can still end them.
CREATE TRIGGER readings_chargeback_hold
BEFORE INSERT ON readings
BEGIN
  SELECT RAISE(ABORT, 'chargeback_hold')
  WHERE EXISTS (SELECT 1 FROM chargebacks WHERE user_id = NEW.client_id AND state = 'open');
END;

CREATE TRIGGER payments_chargeback_hold
BEFORE INSERT ON payments
WHEN NEW.status = 'pending'
BEGIN
  SELECT RAISE(ABORT, 'chargeback_hold')
  WHERE EXISTS (SELECT 1 FROM chargebacks WHERE user_id = NEW.user_id AND state = 'open');
END;

-- Refunds of unused funds. A wallet_refunds row is the client's request; its
-- parts are the per-deposit refunds at the gateway (refundTransaction against
-- the deposit's transaction, order.invoiceNumber 'R<part id>'). A part is
-- reserved (wallet -> refunds in transit, a 'wallet_refund' transfer) in the
-- request's first batch, then settled (refunds in transit -> gateway
-- clearing, 'wallet_refund_settlement') when the gateway refunded it, or
-- returned (refunds in transit -> wallet, 'wallet_refund_return') when it
-- did not. Both outcomes share the transfer key wallet_refund:<part>:outcome,
-- so a part has at most one, and the transfer checks the part's state.
CREATE TABLE wallet_refunds (
  id INTEGER PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users (id),
  amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
  parts INTEGER NOT NULL CHECK (parts BETWEEN 1 AND 5),
  created_at_ms INTEGER NOT NULL
);

CREATE INDEX wallet_refunds_by_user ON wallet_refunds (user_id, created_at_ms, id);

CREATE TRIGGER wallet_refunds_no_update
BEFORE UPDATE ON wallet_refunds
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

CREATE TRIGGER wallet_refunds_no_delete
BEFORE DELETE ON wallet_refunds
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

-- outcome: how the part was decided (approved, duplicate: the gateway named an
-- earlier copy it had processed, found: in the gateway's transaction lists,
-- refused, not_processed: no transaction in the lists); gateway_error_code the
-- gateway's reason code of a refusal (e.g. 54, 55).
CREATE TABLE wallet_refund_parts (
  id INTEGER PRIMARY KEY,
  refund_id INTEGER NOT NULL REFERENCES wallet_refunds (id),
  user_id INTEGER NOT NULL REFERENCES users (id),
  payment_id INTEGER NOT NULL REFERENCES payments (id),
  amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
  state TEXT NOT NULL CHECK (state IN ('in_transit', 'settled', 'returned')),
  gateway_transaction_id TEXT CHECK (gateway_transaction_id IS NULL OR length(gateway_transaction_id) BETWEEN 1 AND 40),
  outcome TEXT CHECK (outcome IS NULL OR outcome IN ('approved', 'duplicate', 'found', 'refused', 'not_processed')),
  gateway_error_code TEXT CHECK (gateway_error_code IS NULL OR length(gateway_error_code) BETWEEN 1 AND 16),
  created_at_ms INTEGER NOT NULL,
  updated_at_ms INTEGER NOT NULL,
  resolved_at_ms INTEGER,
  CHECK ((state = 'in_transit') = (resolved_at_ms IS NULL)),
  CHECK ((state = 'in_transit') = (outcome IS NULL)),
  CHECK (state <> 'settled' OR gateway_transaction_id IS NOT NULL)
);

CREATE INDEX wallet_refund_parts_by_refund ON wallet_refund_parts (refund_id);
CREATE INDEX wallet_refund_parts_by_payment ON wallet_refund_parts (payment_id);
CREATE INDEX wallet_refund_parts_in_transit ON wallet_refund_parts (updated_at_ms) WHERE state = 'in_transit';

-- A part draws on the client's own approved deposit, for the client's own
-- request, and never while a chargeback of the client is open.
CREATE TRIGGER wallet_refund_parts_check_insert
BEFORE INSERT ON wallet_refund_parts
BEGIN
  SELECT RAISE(ABORT, 'chargeback_hold')
  WHERE EXISTS (SELECT 1 FROM chargebacks WHERE user_id = NEW.user_id AND state = 'open');
  SELECT RAISE(ABORT, 'wallet_refund_part_invalid')
  WHERE NEW.state <> 'in_transit'
     OR NOT EXISTS (SELECT 1 FROM wallet_refunds WHERE id = NEW.refund_id AND user_id = NEW.user_id)
     OR NOT EXISTS (SELECT 1 FROM payments WHERE id = NEW.payment_id AND user_id = NEW.user_id
                    AND status = 'approved' AND gateway_transaction_id IS NOT NULL);
END;

-- In transit -> settled | returned, once; while in transit only updated_at_ms
-- moves (the resolver puts an undecided part back in its queue).
CREATE TRIGGER wallet_refund_parts_check_update
BEFORE UPDATE ON wallet_refund_parts
BEGIN
  SELECT RAISE(ABORT, 'wallet_refund_part_resolved')
  WHERE OLD.state <> 'in_transit';
  SELECT RAISE(ABORT, 'ledger_append_only')
  WHERE NEW.id <> OLD.id OR NEW.refund_id <> OLD.refund_id OR NEW.user_id <> OLD.user_id
     OR NEW.payment_id <> OLD.payment_id OR NEW.amount_cents <> OLD.amount_cents
     OR NEW.created_at_ms <> OLD.created_at_ms;
END;

CREATE TRIGGER wallet_refund_parts_no_delete
BEFORE DELETE ON wallet_refund_parts
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

-- The three wallet-refund transfers name their part, in the state they move
-- it to: the reservation while it is in transit (the part is inserted first),
-- a settlement once it is settled, a return once it is returned (the part's
-- UPDATE goes first in the batch).
CREATE TRIGGER transfers_check_wallet_refund_reference
BEFORE INSERT ON transfers
WHEN NEW.kind IN ('wallet_refund', 'wallet_refund_settlement', 'wallet_refund_return') OR NEW.reference_type = 'wallet_refund'
BEGIN
  SELECT RAISE(ABORT, 'wallet_refund_transfer_mismatch')
  WHERE NEW.reference_type IS NOT 'wallet_refund'
     OR NEW.kind NOT IN ('wallet_refund', 'wallet_refund_settlement', 'wallet_refund_return')
     OR NOT EXISTS (SELECT 1 FROM wallet_refund_parts p WHERE p.id = NEW.reference_id
                    AND p.state = CASE NEW.kind WHEN 'wallet_refund' THEN 'in_transit'
                                                WHEN 'wallet_refund_settlement' THEN 'settled'
                                                ELSE 'returned' END);
END;
