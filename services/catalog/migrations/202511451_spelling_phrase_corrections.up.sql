-- Which of several corrected queries SearchBooks' typo tolerance keeps (their order is the
-- spelling corrector's, best first): with p_phrase, the first whose words stand together in
-- an active book as written (phraseto_tsquery: in order, adjacent, stop words keeping their
-- places), so "Cahl Kilroy" becomes the author "Cahal Kilroy" rather than "Call Kilroy"
-- (a book that has both words somewhere); else, or when none does, the first that matches
-- an active book at all (search_matches_any). NULL: none matches. One round trip for all of
-- them; each check is a bitmap scan bounded by its rarest word, and the phrase's positions
-- are checked on those books only.
CREATE FUNCTION book_catalog.search_best_correction(p_queries TEXT[], p_phrase BOOLEAN)
RETURNS INTEGER
LANGUAGE plpgsql STABLE SET enable_seqscan = off SET enable_indexscan = off AS $$
DECLARE
    first_match INTEGER;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_queries, 1), 0) LOOP
        IF p_phrase AND EXISTS (
            SELECT 1 FROM book_catalog.books b
             WHERE b.status = 'active'
               AND b.search_vector @@ phraseto_tsquery('english', p_queries[i])
        ) THEN
            RETURN i;
        END IF;
        IF first_match IS NULL AND book_catalog.search_matches_any(p_queries[i]) THEN
            IF NOT p_phrase THEN
                RETURN i;
            END IF;
            first_match := i;
        END IF;
    END LOOP;
    RETURN first_match;
END
$$;
