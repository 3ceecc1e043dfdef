DROP FUNCTION book_catalog.search_price_keys(NUMERIC, NUMERIC);
DROP FUNCTION book_catalog.search_category_keys(INTEGER[]);
DROP FUNCTION book_catalog.search_filter_keys(INTEGER, NUMERIC, TEXT, TEXT);
