-- Broad single-word relevance without ranking every match. For a query of one lexeme,
-- ts_rank (default weights D 0.1, C 0.2, B 0.4, A 1.0; normalization 0) depends only on the
-- weights of that lexeme's positions in the book, and falls into strict bands:
--   level 3: an A position and at least two positions   rank >= 1.025/zeta(2) = 0.623
--   level 2: one position, weighted A                    rank  = 1/zeta(2)     = 0.608
--   level 1: no A, at least one B                        rank in [0.243, 0.465]
--   none:    only C and D                                rank <= 0.233
-- (zeta(2) = pi^2/6; ts_rank sums w_j/(j+1)^2 over the positions, with the first heaviest
-- one counted as if first; the bounds are worked out in services/catalog/search.py.)
-- So a book of a higher level always outranks every book of a lower one, and the top N of
-- a query are found among the books of level 3, or 2 and 3, or 1 to 3, once that set holds
-- N books: ranking those instead of every match gives exactly the same page.
-- This function lists a book's lexemes of level 1 to 3 as 'lexeme:level'; a GIN index on it
-- (202511412) finds a lexeme's books of a level.
CREATE FUNCTION book_catalog.ranked_lexemes(p_vector tsvector) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT coalesce(array_agg(u.lexeme || ':' || CASE
                                  WHEN 'A' = ANY (u.weights) AND cardinality(u.positions) >= 2
                                      THEN '3'
                                  WHEN 'A' = ANY (u.weights) THEN '2'
                                  ELSE '1'
                              END), '{}')
      FROM unnest(p_vector) u
     WHERE 'A' = ANY (u.weights) OR 'B' = ANY (u.weights)
$$;
