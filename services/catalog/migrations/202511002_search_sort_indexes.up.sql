-- Indexes in SearchBooks' exact sort orders, so that a broad query reads its first page
-- from the index and stops instead of sorting every match: rating breaks ties by
-- rating_count (the old index left 15,000 five-star matches of one word to sort), newest
-- puts undated books last, and id breaks every tie ascending.
DROP INDEX book_catalog.idx_books_rating;
CREATE INDEX idx_books_rating
    ON book_catalog.books (rating_average DESC, rating_count DESC, id) WHERE status = 'active';

DROP INDEX book_catalog.idx_books_publication_date;
CREATE INDEX idx_books_publication_date
    ON book_catalog.books (publication_date DESC NULLS LAST, id) WHERE status = 'active';
