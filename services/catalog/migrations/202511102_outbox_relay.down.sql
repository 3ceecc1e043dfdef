-- Dead letters go back to the outbox (unpublished), so no event is lost by going down.
INSERT INTO book_catalog.outbox
    (id, event_type, aggregate_id, payload, traceparent, created_at, attempts, last_error)
SELECT id, event_type, aggregate_id, payload, traceparent, created_at, attempts, reason
  FROM book_catalog.outbox_dead_letters;
DROP TABLE book_catalog.outbox_dead_letters;
DROP INDEX book_catalog.idx_outbox_published;
DROP INDEX book_catalog.idx_outbox_due;
ALTER TABLE book_catalog.outbox
    DROP COLUMN claimed_until,
    DROP COLUMN next_attempt_at,
    DROP COLUMN tracestate,
    DROP COLUMN data_type,
    DROP COLUMN aggregate_version;
