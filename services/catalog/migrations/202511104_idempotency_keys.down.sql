-- The keys are lost going down, as the old ones were going up.
DROP TABLE book_catalog.idempotency_keys;
CREATE TABLE book_catalog.inventory_requests (
    request_id  VARCHAR(100) PRIMARY KEY,
    result      JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
