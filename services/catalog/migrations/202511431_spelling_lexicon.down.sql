DROP TRIGGER IF EXISTS books_spelling_inserted ON book_catalog.books;
DROP TRIGGER IF EXISTS books_spelling_deleted ON book_catalog.books;
DROP TRIGGER IF EXISTS books_spelling_updated ON book_catalog.books;
DROP FUNCTION IF EXISTS book_catalog.books_spelling();
DROP FUNCTION IF EXISTS book_catalog.fold_spelling_changes();
DROP FUNCTION IF EXISTS book_catalog.search_matches_any(TEXT);
DROP FUNCTION IF EXISTS book_catalog.book_text(INTEGER, TEXT, TEXT, TEXT);
DROP FUNCTION IF EXISTS book_catalog.spelling_words_of(TEXT);
DROP TABLE IF EXISTS book_catalog.spelling_words;
DROP TABLE IF EXISTS book_catalog.spelling_lexeme_changes;
DROP TABLE IF EXISTS book_catalog.spelling_lexemes;
-- pg_trgm stays: dropping an extension other objects may have come to use is not a rollback.
