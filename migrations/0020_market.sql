-- The marketplace's invariants in SQL: the reading state machine, the terms
-- fixed when a reading is requested, and per-minute charges that can only be
-- made in order, once, while the reading is active, at its rate. Any
-- violation aborts the whole batch it is part of (D1 batches are one
-- transaction), so racing heartbeats, `end`, retries and the cron cannot
-- charge a minute twice or charge an ended reading.
--
-- Plus time-ordered indexes for the lists: ids are random, so id order is not
-- time order. They replace the id-ordered indexes of 0003 (same leading
-- column, so foreign-key lookups stay indexed), and two partial indexes
-- replace readings_open_by_status for the cron (each index is one more row
-- written per heartbeat, so none is kept that no query uses).

-- Legal status changes only:
--   requested -> active | declined | cancelled | expired;  active -> ended.
CREATE TRIGGER readings_legal_transition
BEFORE UPDATE OF status ON readings
WHEN NEW.status <> OLD.status AND NOT (
  (OLD.status = 'requested' AND NEW.status IN ('active', 'declined', 'cancelled', 'expired'))
  OR (OLD.status = 'active' AND NEW.status = 'ended'))
BEGIN
  SELECT RAISE(ABORT, 'reading_illegal_transition');
END;

-- The terms agreed at request time never change; accepted_at is set once;
-- billed_minutes moves only one minute forward, and only to a charged minute.
CREATE TRIGGER readings_fixed_terms
BEFORE UPDATE ON readings
WHEN NEW.client_id <> OLD.client_id OR NEW.advisor_id <> OLD.advisor_id OR NEW.channel <> OLD.channel
  OR NEW.rate_cents_per_minute <> OLD.rate_cents_per_minute
  OR NEW.advisor_cents_per_minute <> OLD.advisor_cents_per_minute
  OR NEW.platform_cents_per_minute <> OLD.platform_cents_per_minute
  OR NEW.billing_period_seconds <> OLD.billing_period_seconds
  OR NEW.requested_at_ms <> OLD.requested_at_ms
  OR (OLD.accepted_at_ms IS NOT NULL AND NEW.accepted_at_ms IS NOT OLD.accepted_at_ms)
  OR (OLD.ended_at_ms IS NOT NULL AND NEW.ended_at_ms IS NOT OLD.ended_at_ms)
  OR (NEW.billed_minutes <> OLD.billed_minutes AND NOT (
        NEW.billed_minutes = OLD.billed_minutes + 1
        AND EXISTS (SELECT 1 FROM reading_charges WHERE reading_id = NEW.id AND minute = NEW.billed_minutes)))
BEGIN
  SELECT RAISE(ABORT, 'reading_terms_fixed');
END;

-- Minute k is charged only while the reading is active, right after minute
-- k-1, at the reading's rate, by a posted reading_charge
-- transfer of this reading that debits the client's wallet by that amount.
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

-- The reading's billed_minutes is the count of its charges, by construction.
CREATE TRIGGER reading_charges_advance
AFTER INSERT ON reading_charges
BEGIN
  UPDATE readings SET billed_minutes = NEW.minute WHERE id = NEW.reading_id;
END;

CREATE TRIGGER reading_charges_no_update
BEFORE UPDATE ON reading_charges
BEGIN
  SELECT RAISE(ABORT, 'reading_charges_append_only');
END;

CREATE TRIGGER reading_charges_no_delete
BEFORE DELETE ON reading_charges
BEGIN
  SELECT RAISE(ABORT, 'reading_charges_append_only');
END;

-- destructive-ok: superseded by readings_by_client_time (same leading column); a missing index is slower, never wrong
DROP INDEX readings_by_client;
-- destructive-ok: superseded by readings_by_advisor_time (same leading column)
DROP INDEX readings_by_advisor;
-- destructive-ok: superseded by messages_by_reading_time (same leading column)
DROP INDEX messages_by_reading;
-- destructive-ok: superseded by reviews_by_advisor_time (same leading column)
DROP INDEX reviews_by_advisor;
-- destructive-ok: replaced by readings_requested_by_time and readings_active_by_heartbeat
DROP INDEX readings_open_by_status;

-- A participant's readings, newest first (GET /v1/readings).
CREATE INDEX readings_by_client_time ON readings (client_id, requested_at_ms, id);
CREATE INDEX readings_by_advisor_time ON readings (advisor_id, requested_at_ms, id);
-- Requests waiting for an answer, oldest first (the cron expires them).
CREATE INDEX readings_requested_by_time ON readings (requested_at_ms) WHERE status = 'requested';
-- Active readings by last heartbeat (the cron settles silent ones).
CREATE INDEX readings_active_by_heartbeat ON readings (last_heartbeat_at_ms) WHERE status = 'active';
-- Chat in order; reviews newest first.
CREATE INDEX messages_by_reading_time ON messages (reading_id, created_at_ms, id);
CREATE INDEX reviews_by_advisor_time ON reviews (advisor_id, created_at_ms, id);
