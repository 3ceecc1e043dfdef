-- The consumer worker's state and what it adds to the warehouse (issue 19).

-- Where each shard's consumer stands: written in the same transaction as the facts of the
-- batch it read, and only when it still holds the value that batch started from, so a
-- replica that lost its lease cannot move it (its whole transaction rolls back).
CREATE TABLE analytics.consumer_checkpoints (
    stream_name     TEXT NOT NULL,
    shard_id        TEXT NOT NULL,
    -- The last sequence number whose record is written (reading resumes after it).
    sequence_number TEXT,
    -- The shard is closed and read to its end (its children may start).
    finished        BOOLEAN NOT NULL DEFAULT false,
    -- The replica that wrote it last (for operators; the lease table decides ownership).
    owner           TEXT NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_name, shard_id)
);

-- Records the pipeline could not use, with why; the rest of their batch flows on.
CREATE TABLE analytics.dead_letters (
    id              BIGSERIAL PRIMARY KEY,
    stream_name     TEXT NOT NULL,
    shard_id        TEXT NOT NULL,
    sequence_number TEXT NOT NULL,
    -- The record's bytes as read, whatever they are.
    data            BYTEA NOT NULL,
    reason          TEXT NOT NULL,
    -- The envelope's id and type when it had them.
    event_id        TEXT,
    event_type      TEXT,
    arrival_time    TIMESTAMPTZ NOT NULL,
    dead_letter_time TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (stream_name, shard_id, sequence_number)
);

-- Order lines, for revenue per category: one row per book of an order (an order's cart
-- has one line per book). category_name is the category's name when the line is written,
-- from the category events seen so far; 'unknown' until its category event arrives.
CREATE TABLE analytics.fact_order_lines (
    order_id      VARCHAR(50) NOT NULL REFERENCES analytics.fact_orders (order_id),
    book_id       BIGINT NOT NULL,
    category_id   BIGINT,
    category_name VARCHAR(100) NOT NULL,
    quantity      INTEGER NOT NULL CHECK (quantity > 0),
    revenue_minor BIGINT NOT NULL CHECK (revenue_minor >= 0),
    currency      CHAR(3) NOT NULL,
    PRIMARY KEY (order_id, book_id)
);
CREATE INDEX idx_fact_order_lines_category ON analytics.fact_order_lines (category_name);
CREATE INDEX idx_fact_order_lines_unknown_category ON analytics.fact_order_lines (category_id)
    WHERE category_name = 'unknown';

-- The catalog's category and publisher names, from their events, so dim_books can show
-- names (book events carry only ids) and follows renames.
CREATE TABLE analytics.dim_catalog_names (
    kind              TEXT NOT NULL CHECK (kind IN ('category', 'publisher')),
    id                BIGINT NOT NULL,
    name              TEXT NOT NULL,
    aggregate_version BIGINT NOT NULL,
    PRIMARY KEY (kind, id)
);

-- dim_books follows the catalog's events: the newest version wins, whatever the order.
ALTER TABLE analytics.dim_books
    ADD COLUMN category_id BIGINT,
    ADD COLUMN publisher_id BIGINT,
    ADD COLUMN aggregate_version BIGINT NOT NULL DEFAULT 0;
CREATE INDEX idx_dim_books_category ON analytics.dim_books (category_id);
CREATE INDEX idx_dim_books_publisher ON analytics.dim_books (publisher_id);
