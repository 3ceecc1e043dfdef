DROP INDEX IF EXISTS analytics.idx_dim_books_publisher;
DROP INDEX IF EXISTS analytics.idx_dim_books_category;
ALTER TABLE analytics.dim_books
    DROP COLUMN IF EXISTS aggregate_version,
    DROP COLUMN IF EXISTS publisher_id,
    DROP COLUMN IF EXISTS category_id;
DROP TABLE IF EXISTS analytics.dim_catalog_names;
DROP TABLE IF EXISTS analytics.fact_order_lines;
DROP TABLE IF EXISTS analytics.dead_letters;
DROP TABLE IF EXISTS analytics.consumer_checkpoints;
