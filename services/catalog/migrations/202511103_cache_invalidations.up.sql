-- Cache invalidation that survives partitions and restarts. Every write that changes a value
-- the catalog keeps in Redis leaves rows here in its own transaction: statement triggers
-- write them, so no code path (an RPC, a trigger cascade, an operator's UPDATE) can forget
-- one. The writer applies them to Redis right after its commit and deletes them; rows it
-- could not apply (Redis unreachable, the process died in between) are claimed and applied
-- by the invalidation loop of any replica (services/catalog/invalidations.py).
CREATE TABLE book_catalog.cache_invalidations (
    id            BIGSERIAL PRIMARY KEY,
    -- A book whose cached value changed and its version after the change: the cache keeps a
    -- marker of that version, so a load that read an older version can never be stored.
    book_id       INTEGER,
    book_version  BIGINT,
    -- The slug that named book_id before this change: its slug -> id entry is dropped.
    old_slug      VARCHAR(500),
    -- A generation namespace to bump: search, search-rating, search-popular, category.
    generation    VARCHAR(40),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT cache_invalidations_what CHECK (
        (book_id IS NOT NULL AND book_version IS NOT NULL) OR generation IS NOT NULL
    )
);

-- Which writes end which cached searches (a search page holds the ids in order and their
-- books as they were; display-only fields such as stock may lag on a cached page until it
-- expires, 15 min):
--   search          membership or the default orders: status, the search vector (title,
--                   subtitle, description, author names), price, category, format,
--                   language, publication date (newest); also new and deleted books
--   search-rating   rating_average / rating_count only: the rating sort (reviews)
--   search-popular  purchase_count only: relevance without search words ranks best sellers
-- Stock, ISBNs, slug, URLs, list price, page count, series and publisher change no result.
CREATE FUNCTION book_catalog.books_updated_invalidate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- version and updated_at change on every UPDATE; anything else changes the cached Book.
    INSERT INTO book_catalog.cache_invalidations (book_id, book_version, old_slug)
    SELECT n.id, n.version, CASE WHEN o.slug IS DISTINCT FROM n.slug THEN o.slug END
      FROM old_rows o JOIN new_rows n ON n.id = o.id
     WHERE to_jsonb(o) - '{version,updated_at}'::text[]
           IS DISTINCT FROM to_jsonb(n) - '{version,updated_at}'::text[];

    INSERT INTO book_catalog.cache_invalidations (generation)
    SELECT g.name
      FROM (SELECT bool_or((o.status, o.search_vector, o.price, o.category_id, o.format,
                            o.language_code, o.publication_date)
                           IS DISTINCT FROM
                           (n.status, n.search_vector, n.price, n.category_id, n.format,
                            n.language_code, n.publication_date)) AS search,
                   bool_or((o.rating_average, o.rating_count)
                           IS DISTINCT FROM (n.rating_average, n.rating_count)) AS rating,
                   bool_or(o.purchase_count IS DISTINCT FROM n.purchase_count) AS popular
              FROM old_rows o JOIN new_rows n ON n.id = o.id) c,
           LATERAL (VALUES ('search', c.search),
                           -- a new search generation already ends every cached search
                           ('search-rating', c.rating AND NOT c.search),
                           ('search-popular', c.popular AND NOT c.search)) AS g(name, due)
     WHERE g.due;
    RETURN NULL;
END $$;

CREATE TRIGGER books_updated_invalidate AFTER UPDATE ON book_catalog.books
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION book_catalog.books_updated_invalidate();

CREATE FUNCTION book_catalog.books_inserted_invalidate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO book_catalog.cache_invalidations (generation)
    SELECT 'search' WHERE EXISTS (SELECT 1 FROM new_rows WHERE status = 'active');
    RETURN NULL;
END $$;

CREATE TRIGGER books_inserted_invalidate AFTER INSERT ON book_catalog.books
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION book_catalog.books_inserted_invalidate();

CREATE FUNCTION book_catalog.books_deleted_invalidate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A version past the last one keeps in-flight loads of the deleted row out.
    INSERT INTO book_catalog.cache_invalidations (book_id, book_version, old_slug)
    SELECT o.id, o.version + 1, o.slug FROM old_rows o;
    INSERT INTO book_catalog.cache_invalidations (generation)
    SELECT 'search' WHERE EXISTS (SELECT 1 FROM old_rows);
    RETURN NULL;
END $$;

CREATE TRIGGER books_deleted_invalidate AFTER DELETE ON book_catalog.books
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION book_catalog.books_deleted_invalidate();

-- Category subtrees and lists live under the category generation; a parent change also
-- changes which books a category filter finds.
CREATE FUNCTION book_catalog.categories_changed_invalidate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO book_catalog.cache_invalidations (generation)
    SELECT 'category' WHERE EXISTS (SELECT 1 FROM changed_rows);
    IF TG_OP = 'DELETE' THEN
        INSERT INTO book_catalog.cache_invalidations (generation)
        SELECT 'search' WHERE EXISTS (SELECT 1 FROM changed_rows);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER categories_inserted_invalidate AFTER INSERT ON book_catalog.categories
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION book_catalog.categories_changed_invalidate();
CREATE TRIGGER categories_deleted_invalidate AFTER DELETE ON book_catalog.categories
    REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION book_catalog.categories_changed_invalidate();

CREATE FUNCTION book_catalog.categories_updated_invalidate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO book_catalog.cache_invalidations (generation)
    SELECT 'category' WHERE EXISTS (SELECT 1 FROM new_rows);
    INSERT INTO book_catalog.cache_invalidations (generation)
    SELECT 'search'
     WHERE EXISTS (SELECT 1 FROM old_rows o JOIN new_rows n ON n.id = o.id
                    WHERE o.parent_category_id IS DISTINCT FROM n.parent_category_id);
    RETURN NULL;
END $$;

CREATE TRIGGER categories_updated_invalidate AFTER UPDATE ON book_catalog.categories
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION book_catalog.categories_updated_invalidate();

-- An author's books show and are found by the author's name, not the bio: only a rename
-- rewrites their search vectors (which then invalidates them, above). Before, any author
-- edit rewrote every one of the author's books.
DROP TRIGGER author_renamed ON book_catalog.authors;
CREATE OR REPLACE FUNCTION book_catalog.author_renamed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE book_catalog.books b
       SET search_vector = book_catalog.book_document(b.id, b.title, b.subtitle, b.description)
     WHERE b.id IN (SELECT ba.book_id
                      FROM book_catalog.book_authors ba
                      JOIN new_rows n ON n.id = ba.author_id
                      JOIN old_rows o ON o.id = n.id
                     WHERE (o.first_name, o.last_name) IS DISTINCT FROM (n.first_name, n.last_name));
    RETURN NULL;
END $$;
CREATE TRIGGER author_renamed AFTER UPDATE ON book_catalog.authors
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION book_catalog.author_renamed();

-- Page views, counted apart from the wide books row: a view rewrote the row and, being a
-- non-HOT update, inserted into every index of books (the GIN search index included). A
-- row here is narrow, has one index and room on its page for HOT updates.
-- A Book's view_count = books.view_count (counts from before this table, and demo data)
-- + book_stats.view_count.
CREATE TABLE book_catalog.book_stats (
    book_id    INTEGER PRIMARY KEY REFERENCES book_catalog.books(id) ON DELETE CASCADE,
    view_count BIGINT NOT NULL DEFAULT 0
) WITH (fillfactor = 50);
