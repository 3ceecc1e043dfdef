-- A version per aggregate, kept by the database: every UPDATE of a row increments it, in
-- the same transaction and under the same row lock as the change. Events carry it as
-- aggregate_version (consumers keep the highest they have seen, whatever the delivery
-- order) and cached values carry it (an older load can never replace a newer value).
ALTER TABLE book_catalog.books      ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE book_catalog.authors    ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE book_catalog.publishers ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE book_catalog.categories ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE book_catalog.reviews    ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

CREATE FUNCTION book_catalog.bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END $$;

CREATE TRIGGER books_version BEFORE UPDATE ON book_catalog.books
    FOR EACH ROW EXECUTE FUNCTION book_catalog.bump_version();
CREATE TRIGGER authors_version BEFORE UPDATE ON book_catalog.authors
    FOR EACH ROW EXECUTE FUNCTION book_catalog.bump_version();
CREATE TRIGGER publishers_version BEFORE UPDATE ON book_catalog.publishers
    FOR EACH ROW EXECUTE FUNCTION book_catalog.bump_version();
CREATE TRIGGER categories_version BEFORE UPDATE ON book_catalog.categories
    FOR EACH ROW EXECUTE FUNCTION book_catalog.bump_version();
CREATE TRIGGER reviews_version BEFORE UPDATE ON book_catalog.reviews
    FOR EACH ROW EXECUTE FUNCTION book_catalog.bump_version();
