ALTER TABLE book_catalog.books
    DROP COLUMN IF EXISTS series_id,
    DROP COLUMN IF EXISTS series_number;

DROP TABLE IF EXISTS book_catalog.series;
