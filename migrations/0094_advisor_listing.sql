-- Advisor search at O(page) (issue 15, item 1): GET /v1/advisors reads at most
-- `limit` + a small constant rows, whatever the number of advisors.
--
-- advisor_listing holds one row per (category, advisor) for every category the
-- advisor chose, plus one row with category '*' (every advisor), for each
-- advisor whose user is not erased. Each row carries everything a list item
-- shows (the advisor's columns, the user's display name, the categories as a
-- JSON array), so a page is read from this table alone: an index step plus its
-- table row counts as ONE row read in D1 (measured; a join or a correlated
-- subquery would add a row per item). The sort keys are plain columns:
--   rating sort: rating_key = 5000 - rating_milli ASC, advisor_id ASC
--                (= rating DESC, id ASC; both ASC, so a cursor is one row-value seek)
--   price sort:  rate_cents_per_minute ASC, advisor_id ASC
--
-- Kept in step by triggers on advisors, advisor_categories and users, so every
-- write path (the API, the seed, the bench's set-based loads, a hand-written
-- UPDATE) changes the listing inside the same statement, hence the same batch.
--
-- Indexes: per sort order, with and without status after the category, all
-- UNIQUE (advisor_id closes every key), which lets a UNION of several of them
-- merge without a sort (search.py merges one scan per category, lazily). A
-- price range under the rating sort cannot be a range of a rating-ordered
-- index, so the rate is also cut into aligned power-of-two bands: for each
-- level L in 0..10 an index on (category[, status], min(rate, 2047) >> L,
-- rating_key, advisor_id). Any range [a, b] is the union of at most 19 such
-- bands (its dyadic decomposition), each an exact rating-ordered scan, and
-- search.py merges them: rows read <= limit + 1 + bands. Rates above
-- 2047 (the API allows at most 2000, config.RATE_MAX_CENTS_PER_MINUTE) all fall
-- in the top band and are filtered there by the exact rate.

CREATE TABLE advisor_listing (
  id INTEGER PRIMARY KEY,
  category TEXT NOT NULL CHECK (length(category) BETWEEN 1 AND 32),
  advisor_id INTEGER NOT NULL REFERENCES advisors (user_id),
  status TEXT NOT NULL,
  rate_cents_per_minute INTEGER NOT NULL,
  rating_key INTEGER NOT NULL,
  rating_count INTEGER NOT NULL,
  rating_sum INTEGER NOT NULL,
  headline TEXT NOT NULL,
  bio TEXT NOT NULL,
  version INTEGER NOT NULL,
  created_at_ms INTEGER NOT NULL,
  updated_at_ms INTEGER NOT NULL,
  photo_sha256 TEXT,
  display_name TEXT,
  categories_json TEXT NOT NULL,
  UNIQUE (advisor_id, category)
);

CREATE UNIQUE INDEX listing_price ON advisor_listing (category, rate_cents_per_minute, advisor_id);
CREATE UNIQUE INDEX listing_status_price ON advisor_listing (category, status, rate_cents_per_minute, advisor_id);
CREATE UNIQUE INDEX listing_rating ON advisor_listing (category, rating_key, advisor_id);
CREATE UNIQUE INDEX listing_status_rating ON advisor_listing (category, status, rating_key, advisor_id);

-- The price bands (see above): level L groups 2^L consecutive rates.
CREATE UNIQUE INDEX listing_band0 ON advisor_listing (category, (min(rate_cents_per_minute, 2047) >> 0), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_band1 ON advisor_listing (category, (min(rate_cents_per_minute, 2047) >> 1), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_band2 ON advisor_listing (category, (min(rate_cents_per_minute, 2047) >> 2), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_band3 ON advisor_listing (category, (min(rate_cents_per_minute, 2047) >> 3), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_band4 ON advisor_listing (category, (min(rate_cents_per_minute, 2047) >> 4), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_band5 ON advisor_listing (category, (min(rate_cents_per_minute, 2047) >> 5), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_band6 ON advisor_listing (category, (min(rate_cents_per_minute, 2047) >> 6), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_band7 ON advisor_listing (category, (min(rate_cents_per_minute, 2047) >> 7), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_band8 ON advisor_listing (category, (min(rate_cents_per_minute, 2047) >> 8), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_band9 ON advisor_listing (category, (min(rate_cents_per_minute, 2047) >> 9), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_band10 ON advisor_listing (category, (min(rate_cents_per_minute, 2047) >> 10), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_status_band0 ON advisor_listing (category, status, (min(rate_cents_per_minute, 2047) >> 0), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_status_band1 ON advisor_listing (category, status, (min(rate_cents_per_minute, 2047) >> 1), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_status_band2 ON advisor_listing (category, status, (min(rate_cents_per_minute, 2047) >> 2), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_status_band3 ON advisor_listing (category, status, (min(rate_cents_per_minute, 2047) >> 3), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_status_band4 ON advisor_listing (category, status, (min(rate_cents_per_minute, 2047) >> 4), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_status_band5 ON advisor_listing (category, status, (min(rate_cents_per_minute, 2047) >> 5), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_status_band6 ON advisor_listing (category, status, (min(rate_cents_per_minute, 2047) >> 6), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_status_band7 ON advisor_listing (category, status, (min(rate_cents_per_minute, 2047) >> 7), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_status_band8 ON advisor_listing (category, status, (min(rate_cents_per_minute, 2047) >> 8), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_status_band9 ON advisor_listing (category, status, (min(rate_cents_per_minute, 2047) >> 9), rating_key, advisor_id);
CREATE UNIQUE INDEX listing_status_band10 ON advisor_listing (category, status, (min(rate_cents_per_minute, 2047) >> 10), rating_key, advisor_id);

-- A new advisor: its '*' row (and a row per category, should any exist already).
CREATE TRIGGER advisor_listing_advisor_insert
AFTER INSERT ON advisors
BEGIN
  INSERT INTO advisor_listing (category, advisor_id, status, rate_cents_per_minute, rating_key, rating_count, rating_sum, headline, bio, version, created_at_ms, updated_at_ms, photo_sha256, display_name, categories_json)
  SELECT c.category, NEW.user_id, NEW.status, NEW.rate_cents_per_minute, 5000 - NEW.rating_milli, NEW.rating_count,
         NEW.rating_sum, NEW.headline, NEW.bio, NEW.version, NEW.created_at_ms, NEW.updated_at_ms, NEW.photo_sha256,
         u.display_name, (SELECT json_group_array(category) FROM (SELECT category FROM advisor_categories WHERE advisor_id = NEW.user_id ORDER BY category))
  FROM users u,
       (SELECT '*' AS category UNION ALL SELECT category FROM advisor_categories WHERE advisor_id = NEW.user_id) c
  WHERE u.id = NEW.user_id AND u.erased_at_ms IS NULL;
END;

-- A profile, status, rate, rating or photo change. The indexed columns move in
-- their own statements, each only when its value changed, so an edit of the
-- headline does not rewrite 27 index entries per row.
CREATE TRIGGER advisor_listing_advisor_update
AFTER UPDATE ON advisors
WHEN NEW.headline IS NOT OLD.headline OR NEW.bio IS NOT OLD.bio OR NEW.status IS NOT OLD.status
  OR NEW.rate_cents_per_minute IS NOT OLD.rate_cents_per_minute OR NEW.rating_milli IS NOT OLD.rating_milli
  OR NEW.rating_count IS NOT OLD.rating_count OR NEW.rating_sum IS NOT OLD.rating_sum
  OR NEW.version IS NOT OLD.version OR NEW.created_at_ms IS NOT OLD.created_at_ms
  OR NEW.updated_at_ms IS NOT OLD.updated_at_ms OR NEW.photo_sha256 IS NOT OLD.photo_sha256
BEGIN
  UPDATE advisor_listing
  SET headline = NEW.headline, bio = NEW.bio, rating_count = NEW.rating_count, rating_sum = NEW.rating_sum,
      version = NEW.version, created_at_ms = NEW.created_at_ms, updated_at_ms = NEW.updated_at_ms,
      photo_sha256 = NEW.photo_sha256
  WHERE advisor_id = NEW.user_id;
  UPDATE advisor_listing SET status = NEW.status
  WHERE advisor_id = NEW.user_id AND NEW.status IS NOT OLD.status;
  UPDATE advisor_listing SET rate_cents_per_minute = NEW.rate_cents_per_minute
  WHERE advisor_id = NEW.user_id AND NEW.rate_cents_per_minute IS NOT OLD.rate_cents_per_minute;
  UPDATE advisor_listing SET rating_key = 5000 - NEW.rating_milli
  WHERE advisor_id = NEW.user_id AND NEW.rating_milli IS NOT OLD.rating_milli;
END;

-- A category chosen: every row of the advisor gets the new array, then the
-- category's row is copied from the '*' row (none for an erased advisor).
CREATE TRIGGER advisor_listing_category_insert
AFTER INSERT ON advisor_categories
BEGIN
  UPDATE advisor_listing SET categories_json = (SELECT json_group_array(category) FROM (SELECT category FROM advisor_categories WHERE advisor_id = NEW.advisor_id ORDER BY category))
  WHERE advisor_id = NEW.advisor_id;
  INSERT INTO advisor_listing (category, advisor_id, status, rate_cents_per_minute, rating_key, rating_count, rating_sum, headline, bio, version, created_at_ms, updated_at_ms, photo_sha256, display_name, categories_json)
  SELECT NEW.category, advisor_id, status, rate_cents_per_minute, rating_key, rating_count, rating_sum, headline, bio, version, created_at_ms, updated_at_ms, photo_sha256, display_name, categories_json
  FROM advisor_listing WHERE advisor_id = NEW.advisor_id AND category = '*';
END;

CREATE TRIGGER advisor_listing_category_delete
AFTER DELETE ON advisor_categories
BEGIN
  DELETE FROM advisor_listing WHERE advisor_id = OLD.advisor_id AND category = OLD.category;
  UPDATE advisor_listing SET categories_json = (SELECT json_group_array(category) FROM (SELECT category FROM advisor_categories WHERE advisor_id = OLD.advisor_id ORDER BY category))
  WHERE advisor_id = OLD.advisor_id;
END;

-- Categories are chosen and dropped (INSERT, DELETE), never edited in place:
-- refusing UPDATE keeps the two triggers above the whole story.
CREATE TRIGGER advisor_categories_no_update
BEFORE UPDATE ON advisor_categories
BEGIN
  SELECT RAISE(ABORT, 'advisor_categories_immutable');
END;

-- The display name shown in the list, and erasure: an erased advisor keeps a
-- placeholder profile (privacy.py) but is listed no more.
CREATE TRIGGER advisor_listing_user_update
AFTER UPDATE OF display_name, erased_at_ms ON users
BEGIN
  DELETE FROM advisor_listing WHERE advisor_id = NEW.id AND NEW.erased_at_ms IS NOT NULL;
  UPDATE advisor_listing SET display_name = NEW.display_name
  WHERE advisor_id = NEW.id AND NEW.display_name IS NOT OLD.display_name;
END;

-- Reviews computed rating_milli with a REAL division (D1 binds numbers as REAL),
-- so an average like 23/6 was stored as 3833.33; reviews.py now casts. The
-- stored ones are truncated to the integer the column declares (and the search
-- pages on), as the integer division would have given.
UPDATE advisors SET rating_milli = CAST(rating_milli AS INTEGER) WHERE typeof(rating_milli) <> 'integer';

-- The advisors already there.
INSERT INTO advisor_listing (category, advisor_id, status, rate_cents_per_minute, rating_key, rating_count, rating_sum, headline, bio, version, created_at_ms, updated_at_ms, photo_sha256, display_name, categories_json)
SELECT '*', a.user_id, a.status, a.rate_cents_per_minute, 5000 - a.rating_milli, a.rating_count, a.rating_sum,
       a.headline, a.bio, a.version, a.created_at_ms, a.updated_at_ms, a.photo_sha256, u.display_name,
       (SELECT json_group_array(category) FROM (SELECT category FROM advisor_categories WHERE advisor_id = a.user_id ORDER BY category))
FROM advisors a JOIN users u ON u.id = a.user_id
WHERE u.erased_at_ms IS NULL;

INSERT INTO advisor_listing (category, advisor_id, status, rate_cents_per_minute, rating_key, rating_count, rating_sum, headline, bio, version, created_at_ms, updated_at_ms, photo_sha256, display_name, categories_json)
SELECT c.category, l.advisor_id, l.status, l.rate_cents_per_minute, l.rating_key, l.rating_count, l.rating_sum, l.headline, l.bio, l.version, l.created_at_ms, l.updated_at_ms, l.photo_sha256, l.display_name, l.categories_json
FROM advisor_categories c JOIN advisor_listing l ON l.advisor_id = c.advisor_id AND l.category = '*';

-- The search reads only advisor_listing now: the advisors table's own search
-- indexes would be written on every rating and status change for nothing.
-- destructive-ok: superseded by advisor_listing's indexes (search.py reads only those)
DROP INDEX advisors_by_status_rate;
-- destructive-ok: superseded by advisor_listing's indexes (search.py reads only those)
DROP INDEX advisors_by_status_rating;
-- destructive-ok: superseded by advisor_listing's indexes (search.py reads only those)
DROP INDEX advisors_by_rate;
-- destructive-ok: superseded by advisor_listing's indexes (search.py reads only those)
DROP INDEX advisors_by_rating;
