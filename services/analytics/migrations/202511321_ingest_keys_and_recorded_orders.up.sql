-- RecordInteractions and RecordOrder (services/analytics/ingest.py): AIP-155 request ids
-- (the runtime's PostgresIdempotencyKeys shape) and the orders already recorded, by the
-- hash of their content, so a repeat with other content is refused (ALREADY_EXISTS).
CREATE TABLE analytics.idempotency_keys (
    caller       TEXT NOT NULL,
    key          UUID NOT NULL,
    request_hash BYTEA NOT NULL,
    response     BYTEA,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_keys_expires_at ON analytics.idempotency_keys (expires_at);

CREATE TABLE analytics.recorded_orders (
    order_id     TEXT PRIMARY KEY,
    content_hash BYTEA NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
