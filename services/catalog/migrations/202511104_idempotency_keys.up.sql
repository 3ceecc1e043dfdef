-- Idempotency keys (AIP-155 request_id) as the runtime keeps them
-- (cloudshelf/runtime/idempotency.py): scoped to a caller, stored with a hash of the
-- request and the serialized response, expiring (7 days; `cloudshelf job
-- prune-idempotency-keys` deletes expired rows). Any catalog RPC that takes a request_id
-- keeps its keys here, in its own caller scope.
CREATE TABLE book_catalog.idempotency_keys (
    caller        TEXT NOT NULL,
    key           UUID NOT NULL,
    request_hash  BYTEA NOT NULL,
    -- NULL only inside the transaction that runs the request: it is set before commit.
    response      BYTEA,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_keys_expires_at ON book_catalog.idempotency_keys (expires_at);

-- The old keys are dropped, not carried over: they hold no request to hash (so a reuse
-- could not be told from a retry), their results are not response protos, and their ids
-- need not be UUIDs, which request_id now must be. The cost: an AdjustInventory sent
-- before this migration and retried after it runs again.
DROP TABLE book_catalog.inventory_requests;
