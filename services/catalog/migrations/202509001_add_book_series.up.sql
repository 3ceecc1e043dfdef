-- The seed's "book series" migration.
CREATE TABLE book_catalog.series (
    id           SERIAL PRIMARY KEY,
    name         VARCHAR(200) NOT NULL,
    description  TEXT,
    total_books  INTEGER NOT NULL DEFAULT 0,
    is_completed BOOLEAN NOT NULL DEFAULT false,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE book_catalog.books
    ADD COLUMN series_id INTEGER REFERENCES book_catalog.series(id),
    ADD COLUMN series_number INTEGER CHECK (series_number > 0);

CREATE INDEX idx_books_series ON book_catalog.books (series_id, series_number);
