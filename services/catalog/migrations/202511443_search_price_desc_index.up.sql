-- cloudshelf:no-transaction
-- The price_desc sort's own order (price descending, ties by id ascending, as every sort
-- breaks ties). Walking idx_books_price (price, id) backwards gives ties by id descending,
-- so a page sorted anew every book of its top prices: at 1M books a broad word's first
-- page read 1,356 rows of the 89.99 group (18-54 ms) where price_asc reads 21.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_books_price_desc
    ON book_catalog.books (price DESC, id) WHERE status = 'active';
