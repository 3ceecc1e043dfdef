-- SearchBooks' filters as keys of the search's GIN index (202511442), beside the words:
-- one index scan then intersects the words' posting lists with the filters' (GIN skips
-- through the longer lists), where a btree on price or category meant a BitmapAnd of the
-- words' whole bitmap with the filter's, and the heap read for every book of the words.
-- Keys: 'c<category id>', 'p<price band>' (the facets' bands: <10, 10-20, 20-35, 35-50,
-- 50+ as 0-4), 'f<format>', 'l<language code>'; none for a NULL column.
CREATE FUNCTION book_catalog.search_filter_keys(
    p_category_id INTEGER, p_price NUMERIC, p_format TEXT, p_language TEXT
) RETURNS TEXT[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_remove(ARRAY[
        'c' || p_category_id,
        'p' || width_bucket(p_price, '{10,20,35,50}'::NUMERIC[]),
        'f' || p_format,
        'l' || p_language
    ], NULL)
$$;

-- The keys of any of these categories (a category filter's subtree).
CREATE FUNCTION book_catalog.search_category_keys(p_category_ids INTEGER[])
RETURNS TEXT[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY(SELECT 'c' || id FROM unnest(p_category_ids) id)
$$;

-- The keys of the price bands a price range [p_min, p_max] reaches (NULL: open); the
-- range itself is checked on the book, as a band may hold prices on either side of it.
CREATE FUNCTION book_catalog.search_price_keys(p_min NUMERIC, p_max NUMERIC)
RETURNS TEXT[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY(SELECT 'p' || band FROM generate_series(
        coalesce(width_bucket(p_min, '{10,20,35,50}'::NUMERIC[]), 0),
        coalesce(width_bucket(p_max, '{10,20,35,50}'::NUMERIC[]), 4)) band)
$$;
