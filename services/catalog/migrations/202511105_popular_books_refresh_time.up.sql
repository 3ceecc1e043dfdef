-- The refresh time leaves the rows of popular_books: with `now() AS refreshed_at` in every
-- row, each REFRESH ... CONCURRENTLY saw every row as changed and deleted and re-inserted
-- the whole view even when no book had changed. Without it, a refresh rewrites only the
-- rows whose values changed, and the time of the last refresh lives in a one-row table
-- that refresh_popular_books updates in the refresh's own transaction.
DROP MATERIALIZED VIEW book_catalog.popular_books;

-- Created with its data, so ListPopularBooks answers right after install.
CREATE MATERIALIZED VIEW book_catalog.popular_books AS
SELECT b.id,
       b.title,
       b.price,
       b.cover_image_url,
       b.rating_average,
       b.purchase_count,
       b.category_id,
       c.name AS category_name,
       ROW_NUMBER() OVER (PARTITION BY b.category_id
                          ORDER BY b.purchase_count DESC, b.rating_average DESC, b.id) AS rank_in_category,
       ROW_NUMBER() OVER (ORDER BY b.purchase_count DESC, b.rating_average DESC, b.id) AS rank_overall
  FROM book_catalog.books b
  JOIN book_catalog.categories c ON c.id = b.category_id
 WHERE b.status = 'active' AND b.purchase_count > 0;

-- REFRESH ... CONCURRENTLY needs a unique index on plain columns, with no WHERE clause.
CREATE UNIQUE INDEX idx_popular_books_id ON book_catalog.popular_books (id);
CREATE INDEX idx_popular_books_category_rank ON book_catalog.popular_books (category_id, rank_in_category);
CREATE INDEX idx_popular_books_rank ON book_catalog.popular_books (rank_overall);

CREATE TABLE book_catalog.popular_books_refresh (
    -- Exactly one row.
    singleton    BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    refreshed_at TIMESTAMPTZ NOT NULL
);
INSERT INTO book_catalog.popular_books_refresh (refreshed_at) VALUES (now());
