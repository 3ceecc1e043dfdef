-- The outbox relay claims rows with a lease instead of holding row locks across network
-- calls, retries each row on its own schedule (exponential backoff), and moves rows that
-- cannot be delivered to a dead-letter table with the reason. Events carry the aggregate's
-- database version, the proto message their data holds, and the producer's tracestate.
ALTER TABLE book_catalog.outbox
    ADD COLUMN aggregate_version BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN data_type         TEXT NOT NULL DEFAULT '',
    ADD COLUMN tracestate        TEXT,
    -- Not claimed or retried before this time (per-row backoff).
    ADD COLUMN next_attempt_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A relay is sending the row until then; after it, another relay may take it over.
    ADD COLUMN claimed_until     TIMESTAMPTZ;

-- Unpublished rows in the order the relay claims them; published rows are not in it.
-- (idx_outbox_unpublished, on created_at, stays: it finds the oldest unpublished row.)
CREATE INDEX idx_outbox_due ON book_catalog.outbox (next_attempt_at, created_at)
    WHERE published_at IS NULL;
-- Pruning published rows after the retention period.
CREATE INDEX idx_outbox_published ON book_catalog.outbox (published_at)
    WHERE published_at IS NOT NULL;

CREATE TABLE book_catalog.outbox_dead_letters (
    id                UUID PRIMARY KEY,
    event_type        VARCHAR(100) NOT NULL,
    aggregate_id      VARCHAR(100) NOT NULL,
    aggregate_version BIGINT NOT NULL,
    data_type         TEXT NOT NULL,
    payload           JSONB NOT NULL,
    traceparent       VARCHAR(100),
    tracestate        TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    attempts          INTEGER NOT NULL,
    reason            TEXT NOT NULL,
    dead_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_outbox_dead_letters_dead_at ON book_catalog.outbox_dead_letters (dead_at);
