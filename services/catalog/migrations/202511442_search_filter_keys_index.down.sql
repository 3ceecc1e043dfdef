-- cloudshelf:no-transaction
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_books_search_vector
    ON book_catalog.books USING gin (search_vector);
DROP INDEX CONCURRENTLY IF EXISTS book_catalog.idx_books_search_filtered;
