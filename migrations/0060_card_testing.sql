-- Card-testing defence (issue 13 item 8). Every deposit attempt is recorded in
-- its claim batch with the caller and the client IP; declined and errored
-- attempts count per user and per IP within a window, and past a threshold the
-- subject is cooled off: new deposits are refused (429 deposit_cooloff) until
-- the cool-off ends. Thresholds, window and cool-off are the Worker's vars
-- (DEPOSIT_FAILURES_PER_USER, DEPOSIT_FAILURES_PER_IP,
-- DEPOSIT_FAILURE_WINDOW_SECONDS, DEPOSIT_COOLOFF_SECONDS), bound into the
-- statements by payments.py; the rule itself lives here and in that SQL.

-- One row per deposit attempt (its payment). client_ip is the normalised
-- CF-Connecting-IP (IPv4, or an IPv6 /64), NULL when the request had none.
-- state: in_flight from the claim until its settle batch records the
-- gateway's answer; failed = declined, or a transaction error (responseCode 3);
-- done = anything else (approved, held, token refused, timeout, duplicate).
-- refused is computed by the claim's INSERT ... SELECT (1 = a cool-off is
-- active or the failure budget is spent) and the trigger below refuses such a
-- row, which aborts the whole claim batch: no key, no payment, no gateway call.
CREATE TABLE deposit_attempts (
  payment_id INTEGER PRIMARY KEY REFERENCES payments (id),
  user_id INTEGER NOT NULL REFERENCES users (id),
  client_ip TEXT CHECK (client_ip IS NULL OR length(client_ip) BETWEEN 1 AND 64),
  state TEXT NOT NULL CHECK (state IN ('in_flight', 'failed', 'done')),
  refused INTEGER NOT NULL DEFAULT 0 CHECK (refused IN (0, 1)),
  created_at_ms INTEGER NOT NULL,
  settled_at_ms INTEGER
);

CREATE INDEX deposit_attempts_by_user ON deposit_attempts (user_id, created_at_ms);
CREATE INDEX deposit_attempts_by_ip ON deposit_attempts (client_ip, created_at_ms) WHERE client_ip IS NOT NULL;

CREATE TRIGGER deposit_attempts_refuse_in_cooloff
BEFORE INSERT ON deposit_attempts
WHEN NEW.refused <> 0
BEGIN
  SELECT RAISE(ABORT, 'deposit_cooloff');
END;

-- A cool-off per subject (scope 'user': the user id; 'ip': the client IP key),
-- started by the settle batch whose failure reached the threshold. A row
-- outlives its cool-off (until_ms in the past: over) and is reused by the next
-- one; trips counts them.
CREATE TABLE deposit_cooloffs (
  scope TEXT NOT NULL CHECK (scope IN ('user', 'ip')),
  subject TEXT NOT NULL CHECK (length(subject) BETWEEN 1 AND 64),
  failures INTEGER NOT NULL CHECK (failures > 0),
  started_at_ms INTEGER NOT NULL,
  until_ms INTEGER NOT NULL,
  trips INTEGER NOT NULL DEFAULT 1 CHECK (trips > 0),
  CHECK (until_ms > started_at_ms),
  PRIMARY KEY (scope, subject)
) WITHOUT ROWID;

CREATE INDEX deposit_cooloffs_by_end ON deposit_cooloffs (until_ms);
