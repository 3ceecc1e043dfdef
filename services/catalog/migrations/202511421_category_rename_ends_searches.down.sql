CREATE OR REPLACE FUNCTION book_catalog.categories_updated_invalidate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO book_catalog.cache_invalidations (generation)
    SELECT 'category' WHERE EXISTS (SELECT 1 FROM new_rows);
    INSERT INTO book_catalog.cache_invalidations (generation)
    SELECT 'search'
     WHERE EXISTS (SELECT 1 FROM old_rows o JOIN new_rows n ON n.id = o.id
                    WHERE o.parent_category_id IS DISTINCT FROM n.parent_category_id);
    RETURN NULL;
END $$;
