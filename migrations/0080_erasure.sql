-- Export and erasure (issue 13 item 11: GET /v1/me/export, DELETE /v1/me; docs/PRIVACY.md).
--
-- An erased user keeps its row and id (the ledger, payments and readings refer
-- to it: the records the law requires stay, under that pseudonymous id) but
-- loses everything that names the person: the Clerk subject becomes the
-- tombstone 'erased:<id>' (so the same Clerk user signing in again gets a NEW
-- account), the display name goes, no admin role. erased_at_ms records when.
ALTER TABLE users ADD COLUMN erased_at_ms INTEGER
  CHECK (erased_at_ms IS NULL OR (typeof(erased_at_ms) = 'integer'
         AND clerk_user_id = 'erased:' || id AND display_name IS NULL AND is_admin = 0));

-- Erasure is final: an erased row never changes again (nothing can give it a
-- name, a role or a Clerk subject back).
CREATE TRIGGER users_erasure_final
BEFORE UPDATE ON users
WHEN OLD.erased_at_ms IS NOT NULL
BEGIN
  SELECT RAISE(ABORT, 'user_erased');
END;

-- Nothing new is made for an erased user, whatever request was already under
-- way when the erasure committed (a reading requested, a message or review
-- written, a deposit claimed, a profile created in the same instant): the
-- erasure batch checked that nothing was open; these make sure nothing opens
-- after it. Each is a primary-key lookup of the user.
CREATE TRIGGER readings_no_erased_party
BEFORE INSERT ON readings
WHEN (SELECT erased_at_ms FROM users WHERE id = NEW.client_id) IS NOT NULL
  OR (SELECT erased_at_ms FROM users WHERE id = NEW.advisor_id) IS NOT NULL
BEGIN
  SELECT RAISE(ABORT, 'user_erased');
END;

CREATE TRIGGER messages_no_erased_sender
BEFORE INSERT ON messages
WHEN (SELECT erased_at_ms FROM users WHERE id = NEW.sender_id) IS NOT NULL
BEGIN
  SELECT RAISE(ABORT, 'user_erased');
END;

CREATE TRIGGER reviews_no_erased_client
BEFORE INSERT ON reviews
WHEN (SELECT erased_at_ms FROM users WHERE id = NEW.client_id) IS NOT NULL
BEGIN
  SELECT RAISE(ABORT, 'user_erased');
END;

CREATE TRIGGER payments_no_erased_user
BEFORE INSERT ON payments
WHEN (SELECT erased_at_ms FROM users WHERE id = NEW.user_id) IS NOT NULL
BEGIN
  SELECT RAISE(ABORT, 'user_erased');
END;

CREATE TRIGGER advisors_no_erased_user
BEFORE INSERT ON advisors
WHEN (SELECT erased_at_ms FROM users WHERE id = NEW.user_id) IS NOT NULL
BEGIN
  SELECT RAISE(ABORT, 'user_erased');
END;

-- The export reads, and the erasure deletes, a user's own messages and
-- reviews by their author: index walks, not scans of every chat and review.
CREATE INDEX messages_by_sender_time ON messages (sender_id, created_at_ms, id);
CREATE INDEX reviews_by_client_time ON reviews (client_id, created_at_ms, id);
