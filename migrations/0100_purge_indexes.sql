-- What the cron's purge of old records walks (cron.py purge_old_records): the
-- card-testing attempts past every failure window (they hold a client IP) and
-- PayPal webhook events past PayPal's redelivery, oldest first through these
-- indexes, so a run reads what it deletes rather than the whole table.
CREATE INDEX deposit_attempts_by_time ON deposit_attempts (created_at_ms);
CREATE INDEX paypal_webhook_events_by_time ON paypal_webhook_events (received_at_ms);
