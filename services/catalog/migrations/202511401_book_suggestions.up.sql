-- Completions for SuggestBooks: one row per title of an active book, per author name (two
-- rows: "first last" and "last first", so a surname finds its author) and per active
-- category, with its text normalized once (book_catalog.suggest_norm) and a popularity.
--
-- Which rows exist and their text are kept current by triggers on books, authors and
-- categories (a new, renamed or deactivated book is suggested, or not, at once). The
-- popularity numbers are refreshed with the popular-books job
-- (book_catalog.refresh_suggestion_popularity, called by refresh_popular_books): a purchase
-- or a view never writes here, so a best-selling author's row is never a hot spot.
CREATE EXTENSION IF NOT EXISTS unaccent WITH SCHEMA public;

-- Case-folded with ICU (the cluster may be initialized with locale C, where lower() folds
-- ASCII only), NFKC-normalized, accents removed ("Über" -> "uber"), anything that is not a
-- letter or digit a single space. Used by the triggers and by the query alike, so both
-- sides of a comparison are normalized the same way. IMMUTABLE with the dictionary named
-- explicitly (the usual unaccent idiom), so the query's bounds fold into index conditions.
CREATE FUNCTION book_catalog.suggest_norm(p_text TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT btrim(regexp_replace(
               lower(public.unaccent('public.unaccent'::regdictionary, normalize(p_text, NFKC))
                     COLLATE "und-x-icu"),
               '[^[:alnum:]]+', ' ', 'g') COLLATE "C")
$$;

CREATE TABLE book_catalog.suggestions (
    kind       TEXT NOT NULL CHECK (kind IN ('title', 'author', 'category')),
    ref_id     INTEGER NOT NULL,
    -- 0: the text as shown; 1: an author's "last first".
    variant    SMALLINT NOT NULL DEFAULT 0,
    text       TEXT NOT NULL,
    norm       TEXT COLLATE "C" NOT NULL,
    popularity BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, ref_id, variant)
);
-- Prefix range scans (byte order: COLLATE "C"). Both indexes cover what the ranking reads
-- (index-only scans); only the final page's rows fetch their text.
CREATE INDEX idx_suggestions_norm
    ON book_catalog.suggestions (kind, norm) INCLUDE (ref_id, variant, popularity);
-- Broad prefixes: the most popular rows first, filtered by the prefix.
CREATE INDEX idx_suggestions_popularity
    ON book_catalog.suggestions (kind, popularity DESC, ref_id) INCLUDE (variant, norm);

-- 10 x purchases + views: a purchase says more than a look.
CREATE FUNCTION book_catalog.book_popularity(p_purchases BIGINT, p_views BIGINT) RETURNS BIGINT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 10 * p_purchases + p_views $$;

CREATE FUNCTION book_catalog.books_suggestions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.status <> 'active' THEN
        DELETE FROM book_catalog.suggestions
         WHERE kind = 'title' AND ref_id = (CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END);
    ELSE
        INSERT INTO book_catalog.suggestions (kind, ref_id, text, norm, popularity)
        VALUES ('title', NEW.id, NEW.title, book_catalog.suggest_norm(NEW.title),
                book_catalog.book_popularity(NEW.purchase_count, NEW.view_count))
        ON CONFLICT (kind, ref_id, variant) DO UPDATE
           SET text = EXCLUDED.text, norm = EXCLUDED.norm
         WHERE (suggestions.text, suggestions.norm) IS DISTINCT FROM (EXCLUDED.text, EXCLUDED.norm);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER books_suggestions
    AFTER INSERT OR DELETE OR UPDATE OF title, status ON book_catalog.books
    FOR EACH ROW EXECUTE FUNCTION book_catalog.books_suggestions();

CREATE FUNCTION book_catalog.authors_suggestions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM book_catalog.suggestions WHERE kind = 'author' AND ref_id = OLD.id;
    ELSE
        INSERT INTO book_catalog.suggestions (kind, ref_id, variant, text, norm)
        VALUES ('author', NEW.id, 0, NEW.first_name || ' ' || NEW.last_name,
                book_catalog.suggest_norm(NEW.first_name || ' ' || NEW.last_name)),
               ('author', NEW.id, 1, NEW.first_name || ' ' || NEW.last_name,
                book_catalog.suggest_norm(NEW.last_name || ' ' || NEW.first_name))
        ON CONFLICT (kind, ref_id, variant) DO UPDATE
           SET text = EXCLUDED.text, norm = EXCLUDED.norm
         WHERE (suggestions.text, suggestions.norm) IS DISTINCT FROM (EXCLUDED.text, EXCLUDED.norm);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER authors_suggestions
    AFTER INSERT OR DELETE OR UPDATE OF first_name, last_name ON book_catalog.authors
    FOR EACH ROW EXECUTE FUNCTION book_catalog.authors_suggestions();

CREATE FUNCTION book_catalog.categories_suggestions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NOT NEW.is_active THEN
        DELETE FROM book_catalog.suggestions
         WHERE kind = 'category' AND ref_id = (CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END);
    ELSE
        INSERT INTO book_catalog.suggestions (kind, ref_id, text, norm)
        VALUES ('category', NEW.id, NEW.name, book_catalog.suggest_norm(NEW.name))
        ON CONFLICT (kind, ref_id, variant) DO UPDATE
           SET text = EXCLUDED.text, norm = EXCLUDED.norm
         WHERE (suggestions.text, suggestions.norm) IS DISTINCT FROM (EXCLUDED.text, EXCLUDED.norm);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER categories_suggestions
    AFTER INSERT OR DELETE OR UPDATE OF name, is_active ON book_catalog.categories
    FOR EACH ROW EXECUTE FUNCTION book_catalog.categories_suggestions();

-- The ranking numbers, recomputed; only rows whose number changed are written.
CREATE FUNCTION book_catalog.refresh_suggestion_popularity() RETURNS void LANGUAGE sql AS $$
    WITH books AS (
        -- Views: the books row's count (older and demo data) + book_stats' (RecordView).
        SELECT b.id, b.category_id,
               book_catalog.book_popularity(b.purchase_count,
                                            b.view_count + coalesce(st.view_count, 0)) AS popularity
          FROM book_catalog.books b
          LEFT JOIN book_catalog.book_stats st ON st.book_id = b.id
         WHERE b.status = 'active'
    ), scores AS (
        SELECT 'title' AS kind, b.id AS ref_id, b.popularity FROM books b
        UNION ALL
        SELECT 'author', ba.author_id, sum(b.popularity)::bigint
          FROM book_catalog.book_authors ba JOIN books b ON b.id = ba.book_id
         GROUP BY ba.author_id
        UNION ALL
        SELECT 'category', b.category_id, sum(b.popularity)::bigint
          FROM books b WHERE b.category_id IS NOT NULL
         GROUP BY b.category_id
    )
    UPDATE book_catalog.suggestions s
       SET popularity = coalesce(sc.popularity, 0)
      FROM book_catalog.suggestions s2
      LEFT JOIN scores sc ON sc.kind = s2.kind AND sc.ref_id = s2.ref_id
     WHERE s.kind = s2.kind AND s.ref_id = s2.ref_id AND s.variant = s2.variant
       AND s.popularity IS DISTINCT FROM coalesce(sc.popularity, 0)
$$;

INSERT INTO book_catalog.suggestions (kind, ref_id, text, norm)
SELECT 'title', id, title, book_catalog.suggest_norm(title)
  FROM book_catalog.books WHERE status = 'active';
INSERT INTO book_catalog.suggestions (kind, ref_id, variant, text, norm)
SELECT 'author', id, v.variant, first_name || ' ' || last_name, book_catalog.suggest_norm(v.name)
  FROM book_catalog.authors,
       LATERAL (VALUES (0, first_name || ' ' || last_name),
                       (1, last_name || ' ' || first_name)) AS v(variant, name);
INSERT INTO book_catalog.suggestions (kind, ref_id, text, norm)
SELECT 'category', id, name, book_catalog.suggest_norm(name)
  FROM book_catalog.categories WHERE is_active;
SELECT book_catalog.refresh_suggestion_popularity();
