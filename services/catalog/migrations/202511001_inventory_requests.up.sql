-- Idempotency of AdjustInventory: the first result of each request id is kept and
-- returned again when the same request is retried.
CREATE TABLE book_catalog.inventory_requests (
    request_id  VARCHAR(100) PRIMARY KEY,
    result      JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
