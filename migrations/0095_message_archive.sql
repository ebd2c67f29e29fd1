-- Chat out of D1 once a reading ends (issue 15 item 2; src/clairvora/chat_archive.py,
-- docs/SCALING.md "Chat in R2").
--
-- A reading that ends with messages gets its message_archives row in the same
-- statement that ends it (trigger below): state 'due'. A delay later the cron
-- writes the reading's messages as ONE object to R2 (binding CHAT_ARCHIVE), each
-- ciphertext, IV and key version as stored (nothing is re-encrypted, so key
-- rotation works as before), then flips the row to 'archived' with the object's
-- sha256, size and counts, but only while D1 still holds exactly the messages it
-- wrote (an equal count: nothing can be added to an ended reading, so an equal
-- count is the same set). The flip deletes the messages (trigger): the rows go
-- only together with a verified record, in one transaction.
--
-- Every write is claimed first: `attempt` + 1 with a random token and a lease,
-- and it writes its own key chat/<reading>/<attempt>.json, so two writers never
-- share a key, and an attempt that never became the live object is known to D1:
-- it is queued in archive_object_deletions, which the cron empties from R2.
-- An erasure (DELETE /v1/me) counts itself in `erasures`; the object is then
-- rewritten without the erased participant's messages as a new attempt, and the
-- old object queued for deletion once the new one is live.

CREATE TABLE message_archives (
  reading_id INTEGER PRIMARY KEY REFERENCES readings (id),
  state TEXT NOT NULL CHECK (state IN ('due', 'archived', 'oversize')),
  due_at_ms INTEGER NOT NULL,
  -- The live object (state 'archived'): its attempt number, key and facts.
  generation INTEGER NOT NULL DEFAULT 0 CHECK (generation >= 0),
  object_key TEXT,
  sha256 TEXT,
  r2_etag TEXT CHECK (r2_etag IS NULL OR length(r2_etag) BETWEEN 1 AND 64),
  size_bytes INTEGER CHECK (size_bytes IS NULL OR size_bytes > 0),
  message_count INTEGER CHECK (message_count IS NULL OR message_count >= 0),
  client_message_count INTEGER CHECK (client_message_count IS NULL OR client_message_count >= 0),
  advisor_message_count INTEGER CHECK (advisor_message_count IS NULL OR advisor_message_count >= 0),
  last_message_at_ms INTEGER,
  archived_at_ms INTEGER,
  -- The latest write attempt, claimed before its R2 put.
  attempt INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= generation),
  attempt_token TEXT CHECK (attempt_token IS NULL OR length(attempt_token) = 32),
  attempt_at_ms INTEGER,
  -- Erasures of a participant counted here, and how many the live object reflects.
  erasures INTEGER NOT NULL DEFAULT 0 CHECK (erasures >= 0),
  erasures_applied INTEGER NOT NULL DEFAULT 0 CHECK (erasures_applied BETWEEN 0 AND erasures),
  CHECK ((attempt_token IS NULL) = (attempt_at_ms IS NULL)),
  CHECK ((state = 'archived') = (generation >= 1)),
  CHECK (state <> 'archived' OR (
    object_key = 'chat/' || reading_id || '/' || generation || '.json'
    AND length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'
    AND size_bytes IS NOT NULL AND r2_etag IS NOT NULL AND archived_at_ms IS NOT NULL
    AND message_count = client_message_count + advisor_message_count)),
  CHECK (state = 'archived' OR (object_key IS NULL AND sha256 IS NULL AND erasures = 0))
);

-- The cron's queue: due archives, oldest first (only the due ones are indexed).
CREATE INDEX message_archives_due ON message_archives (due_at_ms) WHERE state = 'due';
-- Archived objects that still hold an erased participant's messages.
CREATE INDEX message_archives_erasing ON message_archives (reading_id) WHERE erasures > erasures_applied;
-- The rows one claim took (tokens are cleared when the attempt ends).
CREATE INDEX message_archives_by_token ON message_archives (attempt_token) WHERE attempt_token IS NOT NULL;

-- R2 objects to delete: attempts that never went live, and objects replaced by
-- a rewrite. Never the live object of an archive (trigger below).
CREATE TABLE archive_object_deletions (
  object_key TEXT PRIMARY KEY CHECK (object_key GLOB 'chat/*' AND length(object_key) <= 64),
  reading_id INTEGER NOT NULL REFERENCES readings (id),
  created_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER archive_object_deletions_not_live
BEFORE INSERT ON archive_object_deletions
WHEN (SELECT object_key FROM message_archives WHERE reading_id = NEW.reading_id) = NEW.object_key
BEGIN
  SELECT RAISE(ABORT, 'archive_object_live');
END;

-- The converse: an archive never goes live on a key queued for deletion.
CREATE TRIGGER message_archives_key_not_queued
BEFORE UPDATE OF object_key ON message_archives
WHEN NEW.object_key IS NOT NULL
  AND EXISTS (SELECT 1 FROM archive_object_deletions WHERE object_key = NEW.object_key)
BEGIN
  SELECT RAISE(ABORT, 'archive_object_queued');
END;

-- due -> archived | oversize, archived -> archived (a rewrite); counters only
-- move forward, a rewrite only ever drops messages.
CREATE TRIGGER message_archives_forward
BEFORE UPDATE ON message_archives
WHEN NEW.reading_id <> OLD.reading_id
  OR (NEW.state <> OLD.state AND NOT (OLD.state = 'due' AND NEW.state IN ('archived', 'oversize')))
  OR NEW.generation < OLD.generation OR NEW.attempt < OLD.attempt
  OR NEW.erasures < OLD.erasures OR NEW.erasures_applied < OLD.erasures_applied
  OR (OLD.state = 'archived' AND NEW.message_count > OLD.message_count)
BEGIN
  SELECT RAISE(ABORT, 'message_archive_illegal_update');
END;

-- The rows leave D1 with the flip to 'archived', never without it.
CREATE TRIGGER message_archives_archived_drops_rows
AFTER UPDATE OF state ON message_archives
WHEN OLD.state = 'due' AND NEW.state = 'archived'
BEGIN
  DELETE FROM messages WHERE reading_id = NEW.reading_id;
END;

-- The end of a reading with messages queues its archive (one more index probe,
-- and one row only when there is chat, inside the batch that ends it).
CREATE TRIGGER readings_end_queues_chat_archive
AFTER UPDATE OF status ON readings
WHEN NEW.status = 'ended' AND OLD.status = 'active'
  AND EXISTS (SELECT 1 FROM messages WHERE reading_id = NEW.id)
BEGIN
  INSERT INTO message_archives (reading_id, state, due_at_ms)
  SELECT NEW.id, 'due', coalesce(NEW.ended_at_ms, 0)
  WHERE NOT EXISTS (SELECT 1 FROM message_archives WHERE reading_id = NEW.id);
END;

-- A message goes only into an active reading, never into one being archived.
-- (The route's INSERT ... SELECT already asks for 'active'; this holds for any writer.)
CREATE TRIGGER messages_only_while_active
BEFORE INSERT ON messages
WHEN (SELECT status FROM readings WHERE id = NEW.reading_id) IS NOT 'active'
  OR EXISTS (SELECT 1 FROM message_archives WHERE reading_id = NEW.reading_id)
BEGIN
  SELECT RAISE(ABORT, 'reading_not_active');
END;

-- Readings that ended before this migration: their chat is due too.
INSERT INTO message_archives (reading_id, state, due_at_ms)
SELECT r.id, 'due', coalesce(r.ended_at_ms, 0)
FROM readings r
WHERE r.status = 'ended' AND EXISTS (SELECT 1 FROM messages m WHERE m.reading_id = r.id);
