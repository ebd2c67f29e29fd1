-- Presence per participant (issue 13, item 1). Until now both participants
-- shared readings.last_heartbeat_at_ms, so an advisor whose app kept sending
-- heartbeats kept billing a client who had closed theirs. Each side's last
-- heartbeat is now its own column, and the rules of billing.py live here:
--
--   * a side that has been silent longer than the reading's heartbeat timeout
--     stops the meter: no minute that began after that side's last heartbeat
--     can be charged any more (whoever asks: a heartbeat, an end, the cron);
--   * the client pays: a charge the ADVISOR asks for covers only minutes that
--     began by the client's own last heartbeat;
--   * the timeout is one of the reading's terms, fixed when it is requested
--     (like billing_period_seconds), so the SQL knows it;
--   * a reading ended by a timeout records who went silent (silent_party).
--
-- A NULL heartbeat column means "nothing from that side since the accept":
-- every rule reads it as accepted_at_ms. last_heartbeat_at_ms stays what it
-- was (the latest heartbeat from either side) for the replies.

ALTER TABLE readings ADD COLUMN client_heartbeat_at_ms INTEGER
  CHECK (client_heartbeat_at_ms IS NULL OR (typeof(client_heartbeat_at_ms) = 'integer' AND accepted_at_ms IS NOT NULL));
ALTER TABLE readings ADD COLUMN advisor_heartbeat_at_ms INTEGER
  CHECK (advisor_heartbeat_at_ms IS NULL OR (typeof(advisor_heartbeat_at_ms) = 'integer' AND accepted_at_ms IS NOT NULL));
-- Rows from before this migration get 120 s, the value every environment
-- configures (HEARTBEAT_TIMEOUT_SECONDS in wrangler.toml); new readings store
-- the configured value when they are requested.
ALTER TABLE readings ADD COLUMN heartbeat_timeout_seconds INTEGER NOT NULL DEFAULT 120
  CHECK (typeof(heartbeat_timeout_seconds) = 'integer' AND heartbeat_timeout_seconds BETWEEN 1 AND 3600);
-- Who went silent, on a reading ended by heartbeat_timeout: 'client',
-- 'advisor', or 'both' (silent since the same instant, e.g. neither app sent
-- anything after the accept). NULL on every other reading, and on readings
-- that timed out before this migration (it was not known then).
ALTER TABLE readings ADD COLUMN silent_party TEXT
  CHECK (silent_party IS NULL OR (silent_party IN ('client', 'advisor', 'both') AND end_reason = 'heartbeat_timeout'));

-- Readings active now: both sides were last heard at the shared heartbeat.
UPDATE readings SET client_heartbeat_at_ms = last_heartbeat_at_ms, advisor_heartbeat_at_ms = last_heartbeat_at_ms
WHERE status = 'active' AND last_heartbeat_at_ms IS NOT NULL;

-- The timeout is fixed with the reading's other terms.
CREATE TRIGGER readings_fixed_heartbeat_timeout
BEFORE UPDATE OF heartbeat_timeout_seconds ON readings
WHEN NEW.heartbeat_timeout_seconds IS NOT OLD.heartbeat_timeout_seconds
BEGIN
  SELECT RAISE(ABORT, 'reading_terms_fixed');
END;

-- A side's last heartbeat only moves forward, and only while the reading is
-- active (so a side that has been silent past the timeout stays silent: the
-- conditional UPDATE that records a heartbeat also refuses to revive it).
CREATE TRIGGER readings_heartbeats_forward
BEFORE UPDATE OF client_heartbeat_at_ms, advisor_heartbeat_at_ms ON readings
WHEN OLD.status <> 'active'
  OR (NEW.client_heartbeat_at_ms IS NOT OLD.client_heartbeat_at_ms
      AND (NEW.client_heartbeat_at_ms IS NULL
           OR NEW.client_heartbeat_at_ms < coalesce(OLD.client_heartbeat_at_ms, OLD.accepted_at_ms)))
  OR (NEW.advisor_heartbeat_at_ms IS NOT OLD.advisor_heartbeat_at_ms
      AND (NEW.advisor_heartbeat_at_ms IS NULL
           OR NEW.advisor_heartbeat_at_ms < coalesce(OLD.advisor_heartbeat_at_ms, OLD.accepted_at_ms)))
BEGIN
  SELECT RAISE(ABORT, 'reading_heartbeat_backwards');
END;

-- Minute k begins at accepted_at + (k-1) * period and is charged at
-- charged_at_ms (the time of the request that charges it; transfers carry who
-- asked). The next minute of an active reading (anything else is
-- reading_charges_check's refusal) is refused, aborting the whole batch:
--   (1) once the earlier of the two last heartbeats is older than the timeout
--       at charged_at, any minute that began after it;
--   (2) at the advisor's request, any minute that began after the client's
--       last heartbeat.
-- (The cron asks as nobody; a client's own heartbeat or end is its presence.)
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

-- The cron looks for active readings by the earlier of the two last
-- heartbeats (the shared column no longer says when a side went silent).
-- destructive-ok: replaced by readings_active_by_presence just below; a missing index is slower, never wrong
DROP INDEX readings_active_by_heartbeat;
CREATE INDEX readings_active_by_presence
ON readings (min(coalesce(client_heartbeat_at_ms, accepted_at_ms), coalesce(advisor_heartbeat_at_ms, accepted_at_ms)))
WHERE status = 'active';
