DROP TABLE IF EXISTS analytics.recorded_orders;
DROP TABLE IF EXISTS analytics.idempotency_keys;
