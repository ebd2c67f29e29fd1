-- Live readings, their per-minute charges, encrypted chat and reviews.

CREATE TABLE readings (
  id INTEGER PRIMARY KEY,
  client_id INTEGER NOT NULL REFERENCES users (id),
  advisor_id INTEGER NOT NULL REFERENCES advisors (user_id),
  channel TEXT NOT NULL DEFAULT 'chat' CHECK (channel IN ('chat')),
  status TEXT NOT NULL CHECK (status IN ('requested', 'active', 'ended', 'declined', 'cancelled', 'expired')),
  -- The rate is fixed when the reading is requested, with its split.
  rate_cents_per_minute INTEGER NOT NULL CHECK (rate_cents_per_minute > 0),
  advisor_cents_per_minute INTEGER NOT NULL CHECK (advisor_cents_per_minute >= 0),
  platform_cents_per_minute INTEGER NOT NULL CHECK (platform_cents_per_minute >= 0),
  billing_period_seconds INTEGER NOT NULL CHECK (billing_period_seconds > 0),
  billed_minutes INTEGER NOT NULL DEFAULT 0 CHECK (billed_minutes >= 0),
  end_reason TEXT CHECK (end_reason IN ('client_ended', 'advisor_ended', 'insufficient_funds', 'heartbeat_timeout')),
  requested_at_ms INTEGER NOT NULL,
  accepted_at_ms INTEGER,
  ended_at_ms INTEGER,
  last_heartbeat_at_ms INTEGER,
  version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
  CHECK (client_id <> advisor_id),
  CHECK (advisor_cents_per_minute + platform_cents_per_minute = rate_cents_per_minute),
  CHECK ((status = 'active') <= (accepted_at_ms IS NOT NULL)),
  CHECK ((status = 'ended') = (end_reason IS NOT NULL))
);

-- A client has at most one open (requested or active) reading.
CREATE UNIQUE INDEX readings_one_open_per_client ON readings (client_id) WHERE status IN ('requested', 'active');
CREATE INDEX readings_by_client ON readings (client_id, id);
CREATE INDEX readings_by_advisor ON readings (advisor_id, id);
CREATE INDEX readings_open_by_status ON readings (status, last_heartbeat_at_ms) WHERE status IN ('requested', 'active');

-- Minute k of reading r is charged at most once, by construction.
CREATE TABLE reading_charges (
  reading_id INTEGER NOT NULL REFERENCES readings (id),
  minute INTEGER NOT NULL CHECK (minute >= 1),
  transfer_id INTEGER NOT NULL UNIQUE REFERENCES transfers (id),
  amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
  charged_at_ms INTEGER NOT NULL,
  PRIMARY KEY (reading_id, minute)
) WITHOUT ROWID;

-- Chat bodies are AES-GCM ciphertext (base64) under the key version beside them.
CREATE TABLE messages (
  id INTEGER PRIMARY KEY,
  reading_id INTEGER NOT NULL REFERENCES readings (id),
  sender_id INTEGER NOT NULL REFERENCES users (id),
  key_version INTEGER NOT NULL CHECK (key_version >= 1),
  iv_b64 TEXT NOT NULL CHECK (length(iv_b64) = 16),
  ciphertext_b64 TEXT NOT NULL CHECK (length(ciphertext_b64) <= 16384),
  created_at_ms INTEGER NOT NULL
);

CREATE INDEX messages_by_reading ON messages (reading_id, id);

CREATE TABLE reviews (
  id INTEGER PRIMARY KEY,
  reading_id INTEGER NOT NULL UNIQUE REFERENCES readings (id),
  client_id INTEGER NOT NULL REFERENCES users (id),
  advisor_id INTEGER NOT NULL REFERENCES advisors (user_id),
  rating INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
  comment TEXT CHECK (comment IS NULL OR length(comment) <= 2000),
  created_at_ms INTEGER NOT NULL
);

CREATE INDEX reviews_by_advisor ON reviews (advisor_id, id DESC);
