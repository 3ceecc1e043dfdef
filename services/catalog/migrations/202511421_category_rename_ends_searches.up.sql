-- SearchBooks' facets name each top-level category, and cached search pages carry them:
-- a category's new name (not only a new parent) now ends the cached searches too.
-- Renames are rare; the cost is one cold search cache.
CREATE OR REPLACE FUNCTION book_catalog.categories_updated_invalidate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO book_catalog.cache_invalidations (generation)
    SELECT 'category' WHERE EXISTS (SELECT 1 FROM new_rows);
    INSERT INTO book_catalog.cache_invalidations (generation)
    SELECT 'search'
     WHERE EXISTS (SELECT 1 FROM old_rows o JOIN new_rows n ON n.id = o.id
                    WHERE (o.parent_category_id, o.name)
                          IS DISTINCT FROM (n.parent_category_id, n.name));
    RETURN NULL;
END $$;
