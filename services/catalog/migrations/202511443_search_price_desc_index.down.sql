-- cloudshelf:no-transaction
DROP INDEX CONCURRENTLY IF EXISTS book_catalog.idx_books_price_desc;
