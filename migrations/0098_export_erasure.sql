-- Export and erasure of issue 14's records (docs/PRIVACY.md; data_export.py, erasure.py).
--
-- The export reads each of the caller's promo grants, promo code redemptions,
-- free-minute offers, satisfaction claims and chargebacks newest first, capped
-- (EXPORT_LIMITS): an index walk on (owner, time, id) that stops at the cap.
-- Without these the reads would scan the whole table (the existing indexes are
-- partial, or lead with another column). The erasure's UPDATEs below use the
-- same indexes.
CREATE INDEX promo_grants_by_client_time ON promo_grants (client_id, granted_at_ms, id);
CREATE INDEX promo_redemptions_by_client_time ON promo_redemptions (client_id, redeemed_at_ms, id);
CREATE INDEX free_minute_offers_by_client_time ON free_minute_offers (client_id, created_at_ms, id);
CREATE INDEX satisfaction_claims_by_client_time ON satisfaction_claims (client_id, created_at_ms, id);
CREATE INDEX chargebacks_by_user_time ON chargebacks (user_id, created_at_ms, id);

-- Erasure removes the free text of the money records it keeps: a satisfaction
-- claim's reason (the client's own words, or an admin's about that client) and
-- a chargeback's notes (an admin's, from the processor's notice, which may name
-- the cardholder). The record stays, the text becomes '[erased]' (the columns
-- are NOT NULL / length-checked: a marker, not NULL). These are the only
-- changes the triggers let through besides a chargeback's resolution, and only
-- once the user row is erased (the erasure's batch tombstones it first).

-- destructive-ok: replaced at once by the same rule with the erasure's one exception
DROP TRIGGER satisfaction_claims_no_update;
CREATE TRIGGER satisfaction_claims_no_update
BEFORE UPDATE ON satisfaction_claims
WHEN NEW.id IS NOT OLD.id OR NEW.reading_id IS NOT OLD.reading_id OR NEW.client_id IS NOT OLD.client_id
  OR NEW.advisor_id IS NOT OLD.advisor_id OR NEW.origin IS NOT OLD.origin
  OR NEW.amount_cents IS NOT OLD.amount_cents OR NEW.clawback_cents IS NOT OLD.clawback_cents
  OR NEW.window_seconds IS NOT OLD.window_seconds OR NEW.max_cents IS NOT OLD.max_cents
  OR NEW.period_days IS NOT OLD.period_days OR NEW.claims_per_period IS NOT OLD.claims_per_period
  OR NEW.requested_by_user_id IS NOT OLD.requested_by_user_id OR NEW.created_at_ms IS NOT OLD.created_at_ms
  OR NEW.reason IS NOT '[erased]'
  OR (SELECT erased_at_ms FROM users WHERE id = OLD.client_id) IS NULL
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

-- A claim in flight when the erasure committed (its caller was read before)
-- would write the client's words after it: refused, like 0080's inserts.
CREATE TRIGGER satisfaction_claims_no_erased_client
BEFORE INSERT ON satisfaction_claims
WHEN (SELECT erased_at_ms FROM users WHERE id = NEW.client_id) IS NOT NULL
BEGIN
  SELECT RAISE(ABORT, 'user_erased');
END;

-- destructive-ok: replaced at once; the resolution rules are 0092's, unchanged
DROP TRIGGER chargebacks_check_update;
-- A resolution: open -> won | lost, once; nothing else about a chargeback
-- changes (0092). Every update but the erasure's comes here.
CREATE TRIGGER chargebacks_check_update
BEFORE UPDATE ON chargebacks
WHEN NEW.state IS NOT OLD.state OR NEW.note IS NOT '[erased]'
BEGIN
  SELECT RAISE(ABORT, 'chargeback_not_open')
  WHERE OLD.state <> 'open' OR NEW.state NOT IN ('won', 'lost');
  SELECT RAISE(ABORT, 'ledger_append_only')
  WHERE NEW.id <> OLD.id OR NEW.payment_id <> OLD.payment_id OR NEW.user_id <> OLD.user_id
     OR NEW.amount_cents <> OLD.amount_cents OR NEW.reason_code IS NOT OLD.reason_code OR NEW.note <> OLD.note
     OR NEW.advisor_side <> OLD.advisor_side OR NEW.clawback_cents <> OLD.clawback_cents
     OR NEW.recorded_by_user_id <> OLD.recorded_by_user_id OR NEW.created_at_ms <> OLD.created_at_ms;
END;

-- The erasure's update: the state stays, only the notes change, to the marker
-- (a resolution note only if there is one), and only for an erased client.
CREATE TRIGGER chargebacks_erase_notes
BEFORE UPDATE ON chargebacks
WHEN NEW.state IS OLD.state AND NEW.note IS '[erased]'
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only')
  WHERE NEW.id IS NOT OLD.id OR NEW.payment_id IS NOT OLD.payment_id OR NEW.user_id IS NOT OLD.user_id
     OR NEW.amount_cents IS NOT OLD.amount_cents OR NEW.reason_code IS NOT OLD.reason_code
     OR NEW.advisor_side IS NOT OLD.advisor_side OR NEW.clawback_cents IS NOT OLD.clawback_cents
     OR NEW.recorded_by_user_id IS NOT OLD.recorded_by_user_id
     OR NEW.resolved_by_user_id IS NOT OLD.resolved_by_user_id
     OR NEW.created_at_ms IS NOT OLD.created_at_ms OR NEW.resolved_at_ms IS NOT OLD.resolved_at_ms
     OR NEW.resolution_note IS NOT (CASE WHEN OLD.resolution_note IS NULL THEN NULL ELSE '[erased]' END)
     OR (SELECT erased_at_ms FROM users WHERE id = OLD.user_id) IS NULL;
END;
