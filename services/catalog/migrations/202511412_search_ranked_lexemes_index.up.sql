-- cloudshelf:no-transaction
-- The books of a lexeme by rank level (see 202511411), active books only as search reads.
DROP INDEX CONCURRENTLY IF EXISTS book_catalog.idx_books_ranked_lexemes;
CREATE INDEX CONCURRENTLY idx_books_ranked_lexemes
    ON book_catalog.books USING gin (book_catalog.ranked_lexemes(search_vector))
    WHERE status = 'active';
