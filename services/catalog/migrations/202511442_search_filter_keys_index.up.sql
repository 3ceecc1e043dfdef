-- cloudshelf:no-transaction
-- The search's GIN index with the filter keys of 202511441 as a second column, active
-- books only (as every search reads): a query on the words alone uses it as it did the
-- index it replaces (GIN serves any subset of its columns alike). Built and swapped
-- without blocking writes.
DROP INDEX CONCURRENTLY IF EXISTS book_catalog.idx_books_search_filtered;
CREATE INDEX CONCURRENTLY idx_books_search_filtered ON book_catalog.books USING gin (
    search_vector,
    book_catalog.search_filter_keys(category_id, price, format, language_code)
) WHERE status = 'active';
DROP INDEX CONCURRENTLY IF EXISTS book_catalog.idx_books_search_vector;
