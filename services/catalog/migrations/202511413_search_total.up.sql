-- SearchBooks' total, computed beside the page in the same statement (one round trip):
-- exact up to p_exact_max matches, an estimate above that, and never a count of a broad
-- query's every match. p_where is the search's WHERE clause as built by
-- services/catalog/search.py (its values as $1 text, $2 category ids, $3 min price,
-- $4 max price, $5 format, $6 language; aliases b for the book, q.query for the tsquery);
-- it is never built from user input, which arrives only as those values.
-- The checks go by cost:
-- 1. the planner's row estimate (nothing read); when it says the matches may be few, a
--    count that stops at p_exact_max + 1 rows;
-- 2. above that: the planner's estimate itself when the caller vouches for it
--    (p_trust_plan: one word, no filter, and the word among the column statistics' most
--    common elements, so its frequency is measured, not guessed: within 1% of the count on
--    a million books at statistics target 1000) and it agrees that the total is large,
--    otherwise the matches in a repeatable block sample of about p_sample_rows books
--    (the whole table when it is no larger), scaled up;
-- 3. a sample that puts the total at or below p_exact_max is checked by the bounded count.
-- p_counted_above: the caller counted more than p_exact_max matches already.
-- Returns the count and whether it is an estimate (always above p_exact_max); NULLs when
-- p_exact_max is negative (the caller knows the total). VOLATILE only because PostgreSQL
-- allows EXPLAIN in no other kind of function; it writes nothing. Also PARALLEL UNSAFE (the
-- default), which keeps the whole search statement that calls it serial: on two shared
-- cores, parallel workers were launched even for the parts of the statement that its
-- gates skip (10-20 ms each, measured), and the serial plans are the ones measured.
CREATE FUNCTION book_catalog.search_total(
    p_where TEXT,
    p_text TEXT,
    p_category_ids INTEGER[],
    p_min_price NUMERIC,
    p_max_price NUMERIC,
    p_format TEXT,
    p_language TEXT,
    p_exact_max INTEGER,
    p_sample_rows INTEGER,
    p_trust_plan BOOLEAN,
    p_counted_above BOOLEAN
) RETURNS TABLE (total_count BIGINT, estimated BOOLEAN)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    source TEXT := 'FROM book_catalog.books b, '
        || '(SELECT websearch_to_tsquery(''english'', $1::text) AS query) q WHERE ' || p_where;
    plan JSON;
    planned FLOAT8;
    counted BIGINT;
    sample_percent FLOAT8;
    hits BIGINT;
    estimate FLOAT8;
BEGIN
    IF p_exact_max < 0 THEN  -- the caller knows the total already
        RETURN QUERY SELECT NULL::BIGINT, NULL::BOOLEAN;
        RETURN;
    END IF;
    EXECUTE 'EXPLAIN (FORMAT JSON) SELECT 1 ' || source INTO plan
        USING p_text, p_category_ids, p_min_price, p_max_price, p_format, p_language;
    planned := (plan -> 0 -> 'Plan' ->> 'Plan Rows')::FLOAT8;
    IF p_counted_above THEN
        counted := p_exact_max + 1;
    ELSIF planned <= 2.0 * p_exact_max THEN
        EXECUTE 'SELECT count(*) FROM (SELECT 1 ' || source || ' LIMIT $7) c' INTO counted
            USING p_text, p_category_ids, p_min_price, p_max_price, p_format, p_language,
                  p_exact_max + 1;
        IF counted <= p_exact_max THEN
            RETURN QUERY SELECT counted, false;
            RETURN;
        END IF;
    END IF;
    IF p_trust_plan AND planned > p_exact_max THEN
        estimate := planned;
    ELSE
        -- A table never analyzed (reltuples -1) or a small one is sampled whole.
        SELECT least(100.0, 100.0 * p_sample_rows / greatest(reltuples, 1)) INTO sample_percent
          FROM pg_class WHERE oid = 'book_catalog.books'::regclass;
        EXECUTE 'SELECT count(*) FROM book_catalog.books b TABLESAMPLE SYSTEM ($7) '
             || 'REPEATABLE (0), (SELECT websearch_to_tsquery(''english'', $1::text) AS query) q '
             || 'WHERE ' || p_where INTO hits
            USING p_text, p_category_ids, p_min_price, p_max_price, p_format, p_language,
                  sample_percent::REAL;
        IF sample_percent >= 100 THEN
            RETURN QUERY SELECT hits, hits > p_exact_max;
            RETURN;
        END IF;
        estimate := hits * 100.0 / sample_percent;
        IF estimate <= p_exact_max AND counted IS NULL THEN
            EXECUTE 'SELECT count(*) FROM (SELECT 1 ' || source || ' LIMIT $7) c' INTO counted
                USING p_text, p_category_ids, p_min_price, p_max_price, p_format, p_language,
                      p_exact_max + 1;
            IF counted <= p_exact_max THEN
                RETURN QUERY SELECT counted, false;
                RETURN;
            END IF;
        END IF;
    END IF;
    RETURN QUERY SELECT greatest(round(estimate)::BIGINT, p_exact_max + 1::BIGINT), true;
END
$$;

-- What a query's words are, for SearchBooks to choose its statement (remembered per text):
-- whether anything is searchable (not only stop words), the query's only lexeme when it
-- is one word (as the query writes it; a lexeme it would quote otherwise is left out),
-- whether that lexeme's frequency is in the column statistics (most common elements;
-- looked up only when the estimate is above p_above, as reading that list costs a few ms),
-- and the planner's estimate of the active books the words match. VOLATILE for EXPLAIN.
CREATE FUNCTION book_catalog.search_words(p_text TEXT, p_above FLOAT8)
RETURNS TABLE (searchable BOOLEAN, lexeme TEXT, measured BOOLEAN, planned FLOAT8)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    query TSQUERY := websearch_to_tsquery('english', p_text);
    word TEXT;
    plan JSON;
    plan_rows FLOAT8;
BEGIN
    SELECT min(u.lexeme) INTO word FROM unnest(to_tsvector('english', p_text)) u
     WHERE query::text = quote_literal(u.lexeme);
    EXECUTE 'EXPLAIN (FORMAT JSON) SELECT 1 FROM book_catalog.books b '
         || 'WHERE b.status = ''active'' AND b.search_vector @@ $1' INTO plan USING query;
    plan_rows := (plan -> 0 -> 'Plan' ->> 'Plan Rows')::FLOAT8;
    RETURN QUERY
        SELECT numnode(query) > 0,
               word,
               word IS NOT NULL AND plan_rows > p_above AND EXISTS (
                   SELECT 1 FROM pg_stats
                    WHERE schemaname = 'book_catalog' AND tablename = 'books'
                      AND attname = 'search_vector'
                      AND word = ANY (most_common_elems::TEXT::TEXT[])),
               plan_rows;
END
$$;

-- The planner's estimate of a search's matches, told every filter (p_where and the values
-- as for search_total): SearchBooks reads the matches at once when it is small.
CREATE FUNCTION book_catalog.search_planned(
    p_where TEXT,
    p_text TEXT,
    p_category_ids INTEGER[],
    p_min_price NUMERIC,
    p_max_price NUMERIC,
    p_format TEXT,
    p_language TEXT
) RETURNS FLOAT8
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    plan JSON;
BEGIN
    EXECUTE 'EXPLAIN (FORMAT JSON) SELECT 1 FROM book_catalog.books b, '
         || '(SELECT websearch_to_tsquery(''english'', $1::text) AS query) q WHERE ' || p_where
        INTO plan
        USING p_text, p_category_ids, p_min_price, p_max_price, p_format, p_language;
    RETURN (plan -> 0 -> 'Plan' ->> 'Plan Rows')::FLOAT8;
END
$$;
