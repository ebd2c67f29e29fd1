-- Advisor blocks (issue 13, item 10). An advisor blocks a client it has met in
-- a reading; a blocked client cannot request a reading from that advisor. The
-- refusal is in the reading request's own INSERT ... SELECT (readings.py:
-- AND NOT EXISTS (SELECT 1 FROM advisor_blocks ...)), so a block that commits
-- between the handler's precheck and its write still refuses the request.
--
-- One row per (advisor, client): blocking twice keeps the first row; unblocking
-- deletes it (a block is a preference, not a record the ledger needs).
CREATE TABLE advisor_blocks (
  advisor_id INTEGER NOT NULL REFERENCES advisors (user_id),
  client_id INTEGER NOT NULL REFERENCES users (id),
  created_at_ms INTEGER NOT NULL CHECK (typeof(created_at_ms) = 'integer'),
  PRIMARY KEY (advisor_id, client_id),
  CHECK (advisor_id <> client_id)
) WITHOUT ROWID;

-- The advisor's list, newest first, keyset-paged on (created_at_ms, client_id).
CREATE INDEX advisor_blocks_by_time ON advisor_blocks (advisor_id, created_at_ms, client_id);

-- "Has this client ever requested a reading from this advisor?" (only such a
-- client can be blocked): one index probe instead of a walk of either side's readings.
CREATE INDEX readings_by_pair ON readings (advisor_id, client_id);
