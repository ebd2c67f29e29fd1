-- The ledger check reads only the payments with a chargeback or a refund (card_checks.py:
-- payments_charged_back_recorded, payments_refunded_recorded); any other payment holds
-- 0 = 0. These find the payments whose recorded amounts are not zero without reading
-- every payment ever (one row per deposit, forever).
CREATE INDEX payments_charged_back ON payments (id) WHERE charged_back_cents <> 0;
CREATE INDEX payments_refunded ON payments (id) WHERE refunded_cents <> 0;
