DROP TABLE book_catalog.popular_books_refresh;
DROP MATERIALIZED VIEW book_catalog.popular_books;

CREATE MATERIALIZED VIEW book_catalog.popular_books AS
SELECT b.id,
       b.title,
       b.price,
       b.cover_image_url,
       b.rating_average,
       b.purchase_count,
       b.category_id,
       c.name AS category_name,
       ROW_NUMBER() OVER (PARTITION BY b.category_id
                          ORDER BY b.purchase_count DESC, b.rating_average DESC, b.id) AS rank_in_category,
       ROW_NUMBER() OVER (ORDER BY b.purchase_count DESC, b.rating_average DESC, b.id) AS rank_overall,
       now() AS refreshed_at
  FROM book_catalog.books b
  JOIN book_catalog.categories c ON c.id = b.category_id
 WHERE b.status = 'active' AND b.purchase_count > 0;

CREATE UNIQUE INDEX idx_popular_books_id ON book_catalog.popular_books (id);
CREATE INDEX idx_popular_books_category_rank ON book_catalog.popular_books (category_id, rank_in_category);
CREATE INDEX idx_popular_books_rank ON book_catalog.popular_books (rank_overall);
