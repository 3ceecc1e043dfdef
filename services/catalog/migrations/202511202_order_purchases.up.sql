-- What the catalog knows of orders, learnt from the storefront's events (order.placed,
-- order.cancelled) through the event bus, never from the storefront's database: one row
-- per book of an order. A review is a verified purchase while its author holds a row of
-- its book that is not cancelled (services/catalog/purchases.py).
CREATE TABLE book_catalog.order_purchases (
    order_id       UUID NOT NULL,
    book_id        BIGINT NOT NULL,
    user_id        VARCHAR(100) NOT NULL,
    cancelled      BOOLEAN NOT NULL,
    -- The order's aggregate_version of the last event applied: an older event arriving
    -- late changes nothing.
    order_version  BIGINT NOT NULL,
    PRIMARY KEY (order_id, book_id)
);
CREATE INDEX idx_order_purchases_holder ON book_catalog.order_purchases (user_id, book_id)
    WHERE NOT cancelled;
