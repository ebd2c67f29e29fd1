-- Advisor profile photos. The image bytes live in R2 (binding MEDIA); D1 keeps
-- only the reference: the object key, the content type decided from the
-- file's magic bytes, its size and its SHA-256 (the photo's ETag).
-- The four columns are all set or all NULL (checked on the last one), and each
-- must be TEXT/INTEGER: a BLOB can never land here.
ALTER TABLE advisors ADD COLUMN photo_key TEXT
  CHECK (photo_key IS NULL OR (typeof(photo_key) = 'text'
         AND length(photo_key) BETWEEN 16 AND 200 AND substr(photo_key, 1, 15) = 'advisor-photos/'));
ALTER TABLE advisors ADD COLUMN photo_content_type TEXT
  CHECK (photo_content_type IS NULL OR photo_content_type IN ('image/jpeg', 'image/png', 'image/webp'));
ALTER TABLE advisors ADD COLUMN photo_size_bytes INTEGER
  CHECK (photo_size_bytes IS NULL OR (typeof(photo_size_bytes) = 'integer'
         AND photo_size_bytes BETWEEN 1 AND 2097152));
ALTER TABLE advisors ADD COLUMN photo_sha256 TEXT
  CHECK (photo_sha256 IS NULL OR (typeof(photo_sha256) = 'text'
         AND length(photo_sha256) = 64 AND photo_sha256 NOT GLOB '*[^0-9a-f]*'))
  CHECK ((photo_key IS NULL) = (photo_content_type IS NULL)
         AND (photo_key IS NULL) = (photo_size_bytes IS NULL)
         AND (photo_key IS NULL) = (photo_sha256 IS NULL));

-- The cron's orphan sweep asks "which of these listed keys does a row
-- reference?": an index walk, not a scan of every advisor. Keys are random,
-- so UNIQUE also guarantees one object is never shared by two rows.
CREATE UNIQUE INDEX advisors_by_photo_key ON advisors (photo_key) WHERE photo_key IS NOT NULL;

-- Where a bounded, resumable cron job stopped (e.g. the R2 listing cursor of
-- the photo sweep), so each run continues instead of rereading the start.
CREATE TABLE maintenance_cursors (
  job TEXT PRIMARY KEY CHECK (length(job) BETWEEN 1 AND 64),
  cursor TEXT CHECK (cursor IS NULL OR length(cursor) <= 1024),
  updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
