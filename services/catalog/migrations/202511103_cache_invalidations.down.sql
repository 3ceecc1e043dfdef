DROP TABLE book_catalog.book_stats;

DROP TRIGGER author_renamed ON book_catalog.authors;
CREATE OR REPLACE FUNCTION book_catalog.author_renamed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE book_catalog.books b
       SET search_vector = book_catalog.book_document(b.id, b.title, b.subtitle, b.description)
     WHERE b.id IN (SELECT ba.book_id FROM book_catalog.book_authors ba
                     JOIN changed_rows c ON c.id = ba.author_id);
    RETURN NULL;
END $$;
CREATE TRIGGER author_renamed AFTER UPDATE ON book_catalog.authors
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION book_catalog.author_renamed();

DROP TRIGGER categories_updated_invalidate ON book_catalog.categories;
DROP TRIGGER categories_deleted_invalidate ON book_catalog.categories;
DROP TRIGGER categories_inserted_invalidate ON book_catalog.categories;
DROP FUNCTION book_catalog.categories_updated_invalidate();
DROP FUNCTION book_catalog.categories_changed_invalidate();
DROP TRIGGER books_deleted_invalidate ON book_catalog.books;
DROP TRIGGER books_inserted_invalidate ON book_catalog.books;
DROP TRIGGER books_updated_invalidate ON book_catalog.books;
DROP FUNCTION book_catalog.books_deleted_invalidate();
DROP FUNCTION book_catalog.books_inserted_invalidate();
DROP FUNCTION book_catalog.books_updated_invalidate();
DROP TABLE book_catalog.cache_invalidations;
