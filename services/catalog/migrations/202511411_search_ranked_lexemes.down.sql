DROP FUNCTION book_catalog.ranked_lexemes(TSVECTOR);
