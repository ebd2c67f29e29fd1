-- Closing ledger periods (issue 15 item 3; src/clairvora/periods.py).
--
-- A period is every ledger entry, in id order, before the first entry created
-- at or after the period's end (entries of one transfer share one batch, so
-- ids are contiguous per transfer and the cut never splits one). Closing it
-- moves its entries to R2 in segments (each a checksummed JSON-lines object of
-- at most periods.SEGMENT_MAX_ENTRIES entries), one cron step per segment:
-- read the segment, verify it (balanced transfers, each account's chain
-- continuing its closing balance), write and verify the object, then ONE batch
-- records the segment and each touched account's part of it, moves each
-- account's closing balance and sequence forward and deletes the segment's
-- entries (all but the table's newest entry: see periods.py). The delete is the only
-- path out of ledger_entries, and the trigger below allows it only for an
-- entry inside a recorded segment of a period being closed or closed: entries
-- of the open period stay append-only.
--
-- Transfers stay in D1: their UNIQUE transfer_key is what makes a repeated
-- money movement (a webhook replayed a year later, a retried payout) fail
-- instead of paying twice, and domain records (charges, refunds, payments'
-- credits, payouts) refer to them. They are archived with their entries.

CREATE TABLE ledger_periods (
  id INTEGER PRIMARY KEY,
  -- Entries created before this instant belong to the period (or an earlier one).
  ends_before_ms INTEGER NOT NULL UNIQUE CHECK (ends_before_ms > 0),
  state TEXT NOT NULL CHECK (state IN ('closing', 'closed')),
  entries INTEGER NOT NULL DEFAULT 0 CHECK (entries >= 0),
  segments INTEGER NOT NULL DEFAULT 0 CHECK (segments >= 0),
  -- The highest entry id the period holds (NULL while none archived yet).
  last_entry_id INTEGER,
  requested_by_user_id INTEGER REFERENCES users (id),
  started_at_ms INTEGER NOT NULL,
  closed_at_ms INTEGER,
  CHECK ((state = 'closed') = (closed_at_ms IS NOT NULL))
);

-- One period closes at a time, in order: each one's end is later than the one before.
CREATE UNIQUE INDEX ledger_periods_one_closing ON ledger_periods (state) WHERE state = 'closing';

CREATE TRIGGER ledger_periods_in_order
BEFORE INSERT ON ledger_periods
BEGIN
  SELECT RAISE(ABORT, 'period_out_of_order')
  WHERE NEW.state <> 'closing'
     OR NEW.ends_before_ms <= coalesce((SELECT max(ends_before_ms) FROM ledger_periods), 0);
END;

CREATE TRIGGER ledger_periods_close_once
BEFORE UPDATE ON ledger_periods
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only')
  WHERE OLD.state = 'closed' OR NEW.id <> OLD.id OR NEW.ends_before_ms <> OLD.ends_before_ms
     OR NEW.started_at_ms <> OLD.started_at_ms
     OR NEW.requested_by_user_id IS NOT OLD.requested_by_user_id;
END;

CREATE TRIGGER ledger_periods_no_delete
BEFORE DELETE ON ledger_periods
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

-- One archived R2 object: entries first_entry_id..last_entry_id (every entry
-- D1 held in that range), its sha256 as R2 verified it on the put.
CREATE TABLE ledger_segments (
  last_entry_id INTEGER PRIMARY KEY,
  first_entry_id INTEGER NOT NULL CHECK (first_entry_id BETWEEN 1 AND last_entry_id),
  period_id INTEGER NOT NULL REFERENCES ledger_periods (id),
  entries INTEGER NOT NULL CHECK (entries BETWEEN 1 AND 10000),
  transfers INTEGER NOT NULL CHECK (transfers BETWEEN 1 AND entries),
  object_key TEXT NOT NULL UNIQUE CHECK (length(object_key) BETWEEN 1 AND 200),
  sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
  size_bytes INTEGER NOT NULL CHECK (size_bytes > 0),
  created_at_ms INTEGER NOT NULL
);

CREATE INDEX ledger_segments_by_period ON ledger_segments (period_id, last_entry_id);

-- Segments follow each other without overlap, inside a period still closing.
CREATE TRIGGER ledger_segments_in_order
BEFORE INSERT ON ledger_segments
BEGIN
  SELECT RAISE(ABORT, 'segment_out_of_order')
  WHERE NEW.first_entry_id <= coalesce((SELECT max(last_entry_id) FROM ledger_segments), 0)
     OR NOT EXISTS (SELECT 1 FROM ledger_periods WHERE id = NEW.period_id AND state = 'closing');
END;

CREATE TRIGGER ledger_segments_no_update
BEFORE UPDATE ON ledger_segments
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

CREATE TRIGGER ledger_segments_no_delete
BEFORE DELETE ON ledger_segments
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only');
END;

-- Each account's balance and sequence at the end of the closed history: where
-- the open period's entries continue from (the ledger check starts here).
CREATE TABLE account_closings (
  account_id INTEGER PRIMARY KEY REFERENCES accounts (id),
  period_id INTEGER NOT NULL REFERENCES ledger_periods (id),
  balance_cents INTEGER NOT NULL,
  sequence INTEGER NOT NULL CHECK (sequence >= 1)
);

-- Each account's part of each segment: where it starts and ends. The record
-- a closed period is proved against (each object's trailer must agree with
-- these rows, and each account's rows must chain), and where an account's
-- closed entries are (the segment holding a sequence: the first row at or
-- above it).
CREATE TABLE segment_accounts (
  account_id INTEGER NOT NULL REFERENCES accounts (id),
  sequence INTEGER NOT NULL CHECK (sequence >= 1),
  segment_last_entry_id INTEGER NOT NULL REFERENCES ledger_segments (last_entry_id),
  opening_balance_cents INTEGER NOT NULL,
  opening_sequence INTEGER NOT NULL CHECK (opening_sequence BETWEEN 0 AND sequence - 1),
  balance_cents INTEGER NOT NULL,
  PRIMARY KEY (account_id, sequence)
) WITHOUT ROWID;

CREATE INDEX segment_accounts_by_segment ON segment_accounts (segment_last_entry_id);

-- The one way out of ledger_entries: an entry inside a recorded segment.
-- (The batch that records the segment deletes its entries after the insert.)
-- destructive-ok: replaced by the closed-period rule below
DROP TRIGGER ledger_entries_no_delete;

CREATE TRIGGER ledger_entries_delete_closed_only
BEFORE DELETE ON ledger_entries
BEGIN
  SELECT RAISE(ABORT, 'ledger_append_only')
  WHERE NOT EXISTS (
    SELECT 1 FROM ledger_segments s
    WHERE s.last_entry_id = (SELECT min(last_entry_id) FROM ledger_segments WHERE last_entry_id >= OLD.id)
      AND s.first_entry_id <= OLD.id);
END;
