-- Broad single-word relevance without ranking every match. For a query of one lexeme,
-- ts_rank (default weights D 0.1, C 0.2, B 0.4, A 1.0; normalization 0) depends only on
-- the weights of that lexeme's positions in the book: with w_1..w_n in position order and
-- m the first position of the heaviest weight,
--     rank = (w_m + sum over j <> m of w_j / j^2) / zeta(2),   zeta(2) = pi^2 / 6.
-- So a book's rank for a lexeme is bounded by the lexeme's weights and count alone, and
-- book_catalog.ranked_lexemes lists a book's lexemes by level, as 'lexeme:level':
--   level  the lexeme has                       a book outside levels 1..level ranks
--   1      an A position and another one        below 0.62 (one A alone: 0.608)
--   2      an A position                        below 0.60 (no A: at most 0.465)
--   3      a B position (no A)                  below 0.24 (C and D only: at most 0.231)
--   4      5+ positions, or 2+ with a D         below 0.175 (4 C positions: 0.173)
--   5      4 positions, all C                   below 0.170 (3 C: 0.165)
--   6      3 positions, all C                   below 0.165 (2 C: 0.152)
-- A GIN index on it (202511412) finds a lexeme's books down to a level. When the N-th best
-- book of levels 1..k ranks at or above the bound of level k (RANK_LEVELS in
-- services/catalog/search.py holds the same bounds, and the search checks it), the first N
-- matches of the whole catalog are those N books, in the same order.
CREATE FUNCTION book_catalog.ranked_lexemes(p_vector TSVECTOR) RETURNS TEXT[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT coalesce(array_agg(u.lexeme || ':' || CASE
               WHEN 'A' = ANY (u.weights) AND cardinality(u.weights) >= 2 THEN '1'
               WHEN 'A' = ANY (u.weights) THEN '2'
               WHEN 'B' = ANY (u.weights) THEN '3'
               WHEN cardinality(u.weights) >= 5 OR 'D' = ANY (u.weights) THEN '4'
               WHEN cardinality(u.weights) = 4 THEN '5'
               ELSE '6' END), '{}')
      FROM unnest(p_vector) u
     WHERE u.weights && '{A,B}'::TEXT[]
        OR cardinality(u.weights) >= 3
        OR ('D' = ANY (u.weights) AND cardinality(u.weights) >= 2)
$$;
