-- Spending limits the client sets (issue 13, item 9): a daily and a monthly
-- deposit limit and a self-exclusion period, on the user's row (edited with
-- PATCH /v1/me and If-Match, like the other profile fields).
--
-- Lowering a limit, or starting or extending self-exclusion, takes effect at
-- once. Raising a limit (removing it is a raise), or shortening or ending
-- self-exclusion, only after a 24 h cooling-off: the new value waits in the
-- *_pending_* columns with the time it takes effect (*_pending_at_ms). Nothing
-- has to move it: every rule reads the EFFECTIVE value at the request's time,
--   CASE WHEN pending_at_ms <= now THEN pending value ELSE current value END,
-- and the next PATCH folds a matured pending value into the current one.
-- NULL limit = no limit; NULL self_excluded_until_ms = not excluded.
--
-- Windows are rolling: "daily" = the 24 h before the deposit, "monthly" = the
-- 30 days before it. Counted: the user's payments that moved or may have moved
-- money (pending, approved, unknown, refunded), plus the new claim. Declined,
-- errored and voided ones charged nothing and do not count.

ALTER TABLE users ADD COLUMN daily_deposit_limit_cents INTEGER
  CHECK (daily_deposit_limit_cents IS NULL OR (typeof(daily_deposit_limit_cents) = 'integer' AND daily_deposit_limit_cents >= 0));
ALTER TABLE users ADD COLUMN daily_deposit_limit_pending_at_ms INTEGER
  CHECK (daily_deposit_limit_pending_at_ms IS NULL OR typeof(daily_deposit_limit_pending_at_ms) = 'integer');
ALTER TABLE users ADD COLUMN daily_deposit_limit_pending_cents INTEGER
  CHECK (daily_deposit_limit_pending_cents IS NULL
         OR (typeof(daily_deposit_limit_pending_cents) = 'integer' AND daily_deposit_limit_pending_cents >= 0
             AND daily_deposit_limit_pending_at_ms IS NOT NULL));
ALTER TABLE users ADD COLUMN monthly_deposit_limit_cents INTEGER
  CHECK (monthly_deposit_limit_cents IS NULL OR (typeof(monthly_deposit_limit_cents) = 'integer' AND monthly_deposit_limit_cents >= 0));
ALTER TABLE users ADD COLUMN monthly_deposit_limit_pending_at_ms INTEGER
  CHECK (monthly_deposit_limit_pending_at_ms IS NULL OR typeof(monthly_deposit_limit_pending_at_ms) = 'integer');
ALTER TABLE users ADD COLUMN monthly_deposit_limit_pending_cents INTEGER
  CHECK (monthly_deposit_limit_pending_cents IS NULL
         OR (typeof(monthly_deposit_limit_pending_cents) = 'integer' AND monthly_deposit_limit_pending_cents >= 0
             AND monthly_deposit_limit_pending_at_ms IS NOT NULL));
ALTER TABLE users ADD COLUMN self_excluded_until_ms INTEGER
  CHECK (self_excluded_until_ms IS NULL OR typeof(self_excluded_until_ms) = 'integer');
ALTER TABLE users ADD COLUMN self_exclusion_pending_at_ms INTEGER
  CHECK (self_exclusion_pending_at_ms IS NULL OR typeof(self_exclusion_pending_at_ms) = 'integer');
ALTER TABLE users ADD COLUMN self_exclusion_pending_until_ms INTEGER
  CHECK (self_exclusion_pending_until_ms IS NULL
         OR (typeof(self_exclusion_pending_until_ms) = 'integer' AND self_exclusion_pending_at_ms IS NOT NULL));

-- The deposits a window sums, by user and time: a claim reads O(counted
-- deposits in the last 30 days) index entries (declined card-testing attempts
-- are not in this index). The trigger's sums repeat this WHERE exactly, so
-- SQLite can use the partial index (src/clairvora/limits.py: WINDOW_SUM).
CREATE INDEX payments_counted_by_user_time ON payments (user_id, created_at_ms, amount_cents)
  WHERE status IN ('pending', 'approved', 'unknown', 'refunded');

-- The deposit claim (payments.py, batch 1: the Idempotency-Key + this INSERT):
-- refused inside that batch, which then writes nothing. D1 runs a batch as one
-- transaction on the primary, so concurrent claims see each other: the second
-- one sums the first. The sum runs only when that limit is set (the CASE), so a
-- user without limits reads no payment rows here.
CREATE TRIGGER payments_spending_limits
BEFORE INSERT ON payments
WHEN NEW.status = 'pending'
BEGIN
  SELECT RAISE(ABORT, 'self_excluded')
  FROM users u
  WHERE u.id = NEW.user_id
    AND CASE WHEN u.self_exclusion_pending_at_ms <= NEW.created_at_ms THEN u.self_exclusion_pending_until_ms
             ELSE u.self_excluded_until_ms END > NEW.created_at_ms;
  SELECT RAISE(ABORT, 'deposit_limit_daily')
  FROM users u
  WHERE u.id = NEW.user_id
    AND CASE WHEN (CASE WHEN u.daily_deposit_limit_pending_at_ms <= NEW.created_at_ms
                        THEN u.daily_deposit_limit_pending_cents ELSE u.daily_deposit_limit_cents END) IS NULL THEN 0
             ELSE NEW.amount_cents + (SELECT coalesce(sum(p.amount_cents), 0) FROM payments p
                                      WHERE p.user_id = NEW.user_id
                                        AND p.status IN ('pending', 'approved', 'unknown', 'refunded')
                                        AND p.created_at_ms > NEW.created_at_ms - 86400000)
                  > CASE WHEN u.daily_deposit_limit_pending_at_ms <= NEW.created_at_ms
                         THEN u.daily_deposit_limit_pending_cents ELSE u.daily_deposit_limit_cents END
        END;
  SELECT RAISE(ABORT, 'deposit_limit_monthly')
  FROM users u
  WHERE u.id = NEW.user_id
    AND CASE WHEN (CASE WHEN u.monthly_deposit_limit_pending_at_ms <= NEW.created_at_ms
                        THEN u.monthly_deposit_limit_pending_cents ELSE u.monthly_deposit_limit_cents END) IS NULL THEN 0
             ELSE NEW.amount_cents + (SELECT coalesce(sum(p.amount_cents), 0) FROM payments p
                                      WHERE p.user_id = NEW.user_id
                                        AND p.status IN ('pending', 'approved', 'unknown', 'refunded')
                                        AND p.created_at_ms > NEW.created_at_ms - 2592000000)
                  > CASE WHEN u.monthly_deposit_limit_pending_at_ms <= NEW.created_at_ms
                         THEN u.monthly_deposit_limit_pending_cents ELSE u.monthly_deposit_limit_cents END
        END;
END;

-- The reading request (readings.py: the INSERT of create_reading): a
-- self-excluded client requests no new reading. Readings already open go on
-- (the client can end them).
CREATE TRIGGER readings_self_exclusion
BEFORE INSERT ON readings
BEGIN
  SELECT RAISE(ABORT, 'self_excluded')
  FROM users u
  WHERE u.id = NEW.client_id
    AND CASE WHEN u.self_exclusion_pending_at_ms <= NEW.requested_at_ms THEN u.self_exclusion_pending_until_ms
             ELSE u.self_excluded_until_ms END > NEW.requested_at_ms;
END;

-- The cooling-off, in SQL too: whatever code writes the row, a limit cannot
-- rise (nor be removed) and self-exclusion cannot shrink at the time of the
-- write (NEW.updated_at_ms) unless that is the matured pending value. "Rise"
-- is measured against the value in force then, so folding a matured pending
-- value into the current column, and every lowering, pass.
CREATE TRIGGER users_limits_cooling_off
BEFORE UPDATE OF daily_deposit_limit_cents, monthly_deposit_limit_cents, self_excluded_until_ms ON users
WHEN (CASE WHEN OLD.daily_deposit_limit_pending_at_ms <= NEW.updated_at_ms THEN OLD.daily_deposit_limit_pending_cents
           ELSE OLD.daily_deposit_limit_cents END) IS NOT NULL
     AND (NEW.daily_deposit_limit_cents IS NULL
          OR NEW.daily_deposit_limit_cents > (CASE WHEN OLD.daily_deposit_limit_pending_at_ms <= NEW.updated_at_ms
                                                   THEN OLD.daily_deposit_limit_pending_cents
                                                   ELSE OLD.daily_deposit_limit_cents END))
  OR (CASE WHEN OLD.monthly_deposit_limit_pending_at_ms <= NEW.updated_at_ms THEN OLD.monthly_deposit_limit_pending_cents
           ELSE OLD.monthly_deposit_limit_cents END) IS NOT NULL
     AND (NEW.monthly_deposit_limit_cents IS NULL
          OR NEW.monthly_deposit_limit_cents > (CASE WHEN OLD.monthly_deposit_limit_pending_at_ms <= NEW.updated_at_ms
                                                     THEN OLD.monthly_deposit_limit_pending_cents
                                                     ELSE OLD.monthly_deposit_limit_cents END))
  OR (CASE WHEN OLD.self_exclusion_pending_at_ms <= NEW.updated_at_ms THEN OLD.self_exclusion_pending_until_ms
           ELSE OLD.self_excluded_until_ms END) > NEW.updated_at_ms
     AND (NEW.self_excluded_until_ms IS NULL
          OR NEW.self_excluded_until_ms < (CASE WHEN OLD.self_exclusion_pending_at_ms <= NEW.updated_at_ms
                                                THEN OLD.self_exclusion_pending_until_ms
                                                ELSE OLD.self_excluded_until_ms END))
BEGIN
  SELECT RAISE(ABORT, 'limit_cooling_off');
END;
