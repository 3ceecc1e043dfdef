DROP FUNCTION IF EXISTS book_catalog.search_best_correction(TEXT[], BOOLEAN);
