-- Purchases are learnt again from events only if they are replayed.
DROP TABLE book_catalog.order_purchases;
