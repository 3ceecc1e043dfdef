-- The lexicon for typo tolerance in SearchBooks (services/catalog/spelling.py), built from
-- the catalog's own words and kept current as books change.
--
-- spelling_lexemes: per lexeme of the search vectors (the english stems the search
-- matches), the number of active books whose vector holds it: what a query word would
-- match. spelling_words: the surface words seen in titles, subtitles, descriptions and
-- author names (what users type and what a correction shows), each with its lexeme,
-- trigram-indexed for the candidate search.
--
-- Writes never update a shared row: a counter per common lexeme ("new", "history") would
-- be written by nearly every book, so concurrent CreateBook/UpdateBook calls would queue
-- on its row lock (measured, 8 writers on the 1M demo catalog: p95 40-43 ms against 24-25
-- ms appending), and a book write touches lexemes twice (the insert, then the author
-- links rewriting the vector), in two sorted batches that two writers can take in
-- opposite orders: a deadlock. Instead the triggers append the book's lexeme differences
-- to spelling_lexeme_changes (insert only, no lock shared with other writers), readers
-- add the pending differences to the folded counts (one index range per word), and
-- fold_spelling_changes() (the fold-spelling job, every 5 minutes) folds them in.
-- Surface words are insert-if-missing (no lock when present); one whose lexeme no book
-- holds any more is never suggested (its count is 0) and is pruned by the fold.
CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;

CREATE TABLE book_catalog.spelling_lexemes (
    lexeme TEXT COLLATE "C" PRIMARY KEY,
    books  INTEGER NOT NULL
);

-- No key: rows are only summed by lexeme and folded all at once (a sequence and a second
-- index would be paid on each of a book's ~100-200 rows).
CREATE TABLE book_catalog.spelling_lexeme_changes (
    lexeme TEXT COLLATE "C" NOT NULL,
    delta  INTEGER NOT NULL
);
CREATE INDEX idx_spelling_lexeme_changes_lexeme
    ON book_catalog.spelling_lexeme_changes (lexeme) INCLUDE (delta);

CREATE TABLE book_catalog.spelling_words (
    word   TEXT COLLATE "C" PRIMARY KEY,
    lexeme TEXT COLLATE "C" NOT NULL
);
CREATE INDEX idx_spelling_words_lexeme ON book_catalog.spelling_words (lexeme);

-- The words of a text, as the search's own parser splits and lower-cases them (ASCII only
-- under the cluster's C locale, like to_tsvector: a word shown as a correction stems to the
-- very lexeme it was counted under; the 'simple' configuration keeps every word, once),
-- with their english lexeme. Stop words (no lexeme), words of fewer than 3 letters and
-- tokens with digits or punctuation (numbers, hyphenated wholes, addresses) are left out:
-- they are never corrected to.
CREATE FUNCTION book_catalog.spelling_words_of(p_text TEXT)
RETURNS TABLE (word TEXT, lexeme TEXT)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT w.lexeme, l.lexeme[1]
      FROM unnest(to_tsvector('simple', p_text)) w,
           LATERAL (SELECT tsvector_to_array(to_tsvector('english', w.lexeme)) AS lexeme) l
     WHERE length(w.lexeme) BETWEEN 3 AND 40 AND w.lexeme !~ '[[:digit:][:punct:]]'
       AND cardinality(l.lexeme) = 1
$$;

-- The text a book's vector is made of (book_catalog.book_document's parts).
CREATE FUNCTION book_catalog.book_text(
    p_book_id INTEGER, p_title TEXT, p_subtitle TEXT, p_description TEXT
) RETURNS TEXT LANGUAGE sql STABLE AS $$
    SELECT concat_ws(' ', p_title, p_subtitle, p_description,
                     (SELECT string_agg(a.first_name || ' ' || a.last_name, ' ')
                        FROM book_catalog.book_authors ba
                        JOIN book_catalog.authors a ON a.id = ba.author_id
                       WHERE ba.book_id = p_book_id))
$$;

CREATE FUNCTION book_catalog.books_spelling() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_lexemes TEXT[] := '{}';
    new_lexemes TEXT[] := '{}';
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.status = 'active' AND OLD.search_vector IS NOT NULL THEN
        old_lexemes := tsvector_to_array(OLD.search_vector);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.status = 'active' AND NEW.search_vector IS NOT NULL THEN
        new_lexemes := tsvector_to_array(NEW.search_vector);
    END IF;
    INSERT INTO book_catalog.spelling_lexeme_changes (lexeme, delta)
    SELECT lexeme, sum(delta)
      FROM (SELECT unnest(new_lexemes), 1 UNION ALL SELECT unnest(old_lexemes), -1) d(lexeme, delta)
     GROUP BY lexeme HAVING sum(delta) <> 0;
    -- The text is parsed (~1.7 ms for a 160-word description) only when the book brings
    -- a lexeme the vocabulary has no spelling of; another spelling of a known lexeme
    -- ("histories" beside "history") would match the same books as a correction.
    IF EXISTS (SELECT 1 FROM unnest(new_lexemes) l(lexeme)
                WHERE NOT (l.lexeme = ANY (old_lexemes))
                  AND NOT EXISTS (SELECT 1 FROM book_catalog.spelling_words w
                                   WHERE w.lexeme = l.lexeme)) THEN
        INSERT INTO book_catalog.spelling_words (word, lexeme)
        SELECT w.word, w.lexeme
          FROM book_catalog.spelling_words_of(
                   book_catalog.book_text(NEW.id, NEW.title, NEW.subtitle, NEW.description)) w
         WHERE w.lexeme = ANY (new_lexemes) AND NOT (w.lexeme = ANY (old_lexemes))
        ON CONFLICT (word) DO NOTHING;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER books_spelling_inserted AFTER INSERT ON book_catalog.books
    FOR EACH ROW WHEN (NEW.status = 'active')
    EXECUTE FUNCTION book_catalog.books_spelling();
CREATE TRIGGER books_spelling_deleted AFTER DELETE ON book_catalog.books
    FOR EACH ROW WHEN (OLD.status = 'active')
    EXECUTE FUNCTION book_catalog.books_spelling();
CREATE TRIGGER books_spelling_updated AFTER UPDATE ON book_catalog.books
    FOR EACH ROW WHEN ((OLD.status = 'active') IS DISTINCT FROM (NEW.status = 'active')
                       OR (NEW.status = 'active'
                           AND OLD.search_vector IS DISTINCT FROM NEW.search_vector))
    EXECUTE FUNCTION book_catalog.books_spelling();

-- Folds the pending differences into the counts (one statement: readers see the pending
-- rows or their folded sum, never both), then prunes what no active book holds.
CREATE FUNCTION book_catalog.fold_spelling_changes() RETURNS INTEGER LANGUAGE plpgsql AS $$
DECLARE
    folded INTEGER;
BEGIN
    WITH moved AS (
        DELETE FROM book_catalog.spelling_lexeme_changes RETURNING lexeme, delta
    ), sums AS (
        SELECT lexeme, sum(delta)::integer AS delta FROM moved GROUP BY lexeme
    )
    INSERT INTO book_catalog.spelling_lexemes AS l (lexeme, books)
    SELECT lexeme, delta FROM sums
    ON CONFLICT (lexeme) DO UPDATE SET books = l.books + EXCLUDED.books;
    GET DIAGNOSTICS folded = ROW_COUNT;
    DELETE FROM book_catalog.spelling_lexemes l
     WHERE l.books <= 0
       AND NOT EXISTS (SELECT 1 FROM book_catalog.spelling_lexeme_changes c
                        WHERE c.lexeme = l.lexeme);
    DELETE FROM book_catalog.spelling_words w
     WHERE NOT EXISTS (SELECT 1 FROM book_catalog.spelling_lexemes l WHERE l.lexeme = w.lexeme)
       AND NOT EXISTS (SELECT 1 FROM book_catalog.spelling_lexeme_changes c
                        WHERE c.lexeme = w.lexeme);
    RETURN folded;
END $$;

-- Whether a (corrected) web-search query matches an active book. Through the GIN index
-- only: under EXISTS the planner would rather walk the table (or a sort index) until the
-- first match, which for words that never meet in one book, estimated as independent,
-- is a scan of the whole catalog. A query of one lexeme needs no look: it is asked about a
-- corrected word, which the counts say a book holds.
CREATE FUNCTION book_catalog.search_matches_any(p_query TEXT) RETURNS BOOLEAN
LANGUAGE sql STABLE SET enable_seqscan = off SET enable_indexscan = off AS $$
    SELECT CASE WHEN numnode(q) <= 1 THEN numnode(q) = 1
                ELSE EXISTS (SELECT 1 FROM book_catalog.books b
                              WHERE b.status = 'active' AND b.search_vector @@ q) END
      FROM websearch_to_tsquery('english', p_query) q
$$;

-- The lexicon of the books already there. The distinct words are few (tens of thousands)
-- but the planner guesses millions and would sort every word of every book: room to hash.
SET LOCAL work_mem = '256MB';
INSERT INTO book_catalog.spelling_lexemes (lexeme, books)
SELECT word, ndoc FROM ts_stat(
    $$SELECT search_vector FROM book_catalog.books WHERE status = 'active'$$);

-- Each text's distinct words first, each stemmed once (not once per book: the words
-- repeat across a million books); authors of no active book fall out with the words no
-- vector holds.
-- MATERIALIZED: the stemming conditions would otherwise be pushed into the scans, once per
-- word of every book.
WITH words AS MATERIALIZED (
    SELECT u.lexeme AS word
      FROM book_catalog.books b,
           unnest(to_tsvector('simple', concat_ws(' ', b.title, b.subtitle, b.description))) u
     WHERE b.status = 'active'
    UNION
    SELECT u.lexeme
      FROM book_catalog.authors a, unnest(to_tsvector('simple', a.first_name || ' ' || a.last_name)) u
)
INSERT INTO book_catalog.spelling_words (word, lexeme)
SELECT w.word, l.lexeme[1]
  FROM words w, LATERAL (SELECT tsvector_to_array(to_tsvector('english', w.word)) AS lexeme) l
 WHERE length(w.word) BETWEEN 3 AND 40 AND w.word !~ '[[:digit:][:punct:]]'
   AND cardinality(l.lexeme) = 1
   AND EXISTS (SELECT 1 FROM book_catalog.spelling_lexemes x WHERE x.lexeme = l.lexeme[1]);

-- GIN: the candidates above pg_trgm's similarity threshold in ~2 ms at 51,000 words
-- (GiST's nearest-neighbour order, which needs no threshold, took ~36 ms).
CREATE INDEX idx_spelling_words_trgm ON book_catalog.spelling_words USING gin (word gin_trgm_ops);
ANALYZE book_catalog.spelling_lexemes;
ANALYZE book_catalog.spelling_words;
