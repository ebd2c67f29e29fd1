-- Money (issue 4): what card payments, their reversals and reading refunds
-- guarantee in SQL, on top of the ledger in 0002.

-- A card payment is credited at most once, whatever the transfer key.
CREATE UNIQUE INDEX transfers_one_credit_per_payment ON transfers (reference_id)
  WHERE kind = 'deposit' AND reference_type = 'payment';

-- A credit that names a payment needs the payment approved first (same batch),
-- and a deposit reversal (the only transfer that may take a wallet below zero)
-- must name a payment that is approved and not yet fully reversed. The
-- payment's reversed_cents CHECK (<= amount_cents) bounds the total reversed.
CREATE TRIGGER transfers_check_payment_reference
BEFORE INSERT ON transfers
WHEN NEW.kind IN ('deposit', 'deposit_reversal') AND (NEW.kind = 'deposit_reversal' OR NEW.reference_type IS NOT NULL)
BEGIN
  SELECT RAISE(ABORT, 'payment_not_approved')
  WHERE NEW.reference_type IS NOT 'payment'
     OR NOT EXISTS (SELECT 1 FROM payments WHERE id = NEW.reference_id AND status = 'approved');
END;

-- Refunds of a reading's charges. The split between advisor and platform is
-- computed by the Worker from the refunded total it read (refunded_before_cents);
-- the trigger refuses the refund if that total moved meanwhile (a concurrent
-- refund), and refuses any refund beyond what the reading was charged.
CREATE TABLE reading_refunds (
  id INTEGER PRIMARY KEY,
  reading_id INTEGER NOT NULL REFERENCES readings (id),
  transfer_id INTEGER NOT NULL UNIQUE REFERENCES transfers (id),
  amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
  advisor_cents INTEGER NOT NULL CHECK (advisor_cents >= 0),
  platform_cents INTEGER NOT NULL CHECK (platform_cents >= 0),
  refunded_before_cents INTEGER NOT NULL CHECK (refunded_before_cents >= 0),
  reason TEXT NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
  requested_by_user_id INTEGER NOT NULL REFERENCES users (id),
  created_at_ms INTEGER NOT NULL,
  CHECK (advisor_cents + platform_cents = amount_cents)
);

CREATE INDEX reading_refunds_by_reading ON reading_refunds (reading_id);

CREATE TRIGGER reading_refunds_check_insert
BEFORE INSERT ON reading_refunds
BEGIN
  SELECT RAISE(ABORT, 'refund_conflict')
  WHERE NEW.refunded_before_cents <>
        (SELECT coalesce(sum(amount_cents), 0) FROM reading_refunds WHERE reading_id = NEW.reading_id);
  SELECT RAISE(ABORT, 'refund_exceeds_charges')
  WHERE NEW.refunded_before_cents + NEW.amount_cents >
        (SELECT coalesce(sum(amount_cents), 0) FROM reading_charges WHERE reading_id = NEW.reading_id);
END;

CREATE TRIGGER reading_refunds_no_update
BEFORE UPDATE ON reading_refunds
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

CREATE TRIGGER reading_refunds_no_delete
BEFORE DELETE ON reading_refunds
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

-- Webhook events by payment (reconciliation and support look-ups).
CREATE INDEX webhook_events_by_payment ON webhook_events (payment_id) WHERE payment_id IS NOT NULL;
