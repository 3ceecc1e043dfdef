DROP INDEX book_catalog.idx_books_rating;
CREATE INDEX idx_books_rating ON book_catalog.books (rating_average, id) WHERE status = 'active';

DROP INDEX book_catalog.idx_books_publication_date;
CREATE INDEX idx_books_publication_date
    ON book_catalog.books (publication_date, id) WHERE status = 'active';
