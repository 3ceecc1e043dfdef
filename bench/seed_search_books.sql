-- The seed's own search_books ("Query Optimization"), installed beside ours as the
-- baseline. One line is added so that it runs at all: as written PL/pgSQL rejects it
-- ("column reference relevance_score is ambiguous"). Its other behaviour is kept as is:
-- author names aggregated for every match before LIMIT, exact-category filter only,
-- and the ORDER BY CASE that sorts price_asc descending.
CREATE OR REPLACE FUNCTION book_catalog.search_books(
    search_term TEXT,
    category_filter INTEGER DEFAULT NULL,
    price_min DECIMAL DEFAULT NULL,
    price_max DECIMAL DEFAULT NULL,
    sort_by VARCHAR DEFAULT 'relevance',
    limit_count INTEGER DEFAULT 20,
    offset_count INTEGER DEFAULT 0
)
RETURNS TABLE (
    id INTEGER,
    title VARCHAR,
    author_names TEXT,
    price DECIMAL,
    rating_average DECIMAL,
    cover_image_url VARCHAR,
    relevance_score REAL
) AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH search_results AS (
        SELECT
            b.id,
            b.title,
            string_agg(a.first_name || ' ' || a.last_name, ', ' ORDER BY ba.order_index) as author_names,
            b.price,
            b.rating_average,
            b.cover_image_url,
            ts_rank(b.search_vector, plainto_tsquery('english', search_term)) as relevance_score
        FROM book_catalog.books b
        LEFT JOIN book_catalog.book_authors ba ON b.id = ba.book_id
        LEFT JOIN book_catalog.authors a ON ba.author_id = a.id
        WHERE
            b.status = 'active'
            AND (search_term IS NULL OR b.search_vector @@ plainto_tsquery('english', search_term))
            AND (category_filter IS NULL OR b.category_id = category_filter)
            AND (price_min IS NULL OR b.price >= price_min)
            AND (price_max IS NULL OR b.price <= price_max)
        GROUP BY b.id, b.title, b.price, b.rating_average, b.cover_image_url, b.search_vector
    )
    SELECT *
    FROM search_results
    ORDER BY
        CASE
            WHEN sort_by = 'relevance' THEN relevance_score
            WHEN sort_by = 'price_asc' THEN price::REAL
            WHEN sort_by = 'price_desc' THEN -price::REAL
            WHEN sort_by = 'rating' THEN rating_average::REAL
            ELSE relevance_score
        END DESC
    LIMIT limit_count
    OFFSET offset_count;
END;
$$ LANGUAGE plpgsql;
