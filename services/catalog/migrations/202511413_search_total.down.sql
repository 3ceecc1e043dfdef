DROP FUNCTION book_catalog.search_words(TEXT);
DROP FUNCTION book_catalog.search_total(
    TEXT, TEXT, INTEGER[], NUMERIC, NUMERIC, TEXT, TEXT, INTEGER, INTEGER, BOOLEAN
);
