DROP TABLE IF EXISTS book_catalog.inventory_requests;
