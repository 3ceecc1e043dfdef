-- The analytics warehouse (after the seed's "Business Intelligence Data Model").
-- Money is stored in integer minor units with its currency, never as a float.
CREATE SCHEMA IF NOT EXISTS analytics;

CREATE TABLE analytics.fact_orders (
    order_id              VARCHAR(50) PRIMARY KEY,
    user_id               VARCHAR(50),
    session_id            VARCHAR(50),
    order_date            DATE NOT NULL,
    order_timestamp       TIMESTAMPTZ NOT NULL,
    currency              CHAR(3) NOT NULL,
    total_amount_minor    BIGINT NOT NULL CHECK (total_amount_minor >= 0),
    total_items           INTEGER NOT NULL CHECK (total_items >= 0),
    payment_method        VARCHAR(50),
    discount_amount_minor BIGINT NOT NULL DEFAULT 0,
    tax_amount_minor      BIGINT NOT NULL DEFAULT 0,
    shipping_cost_minor   BIGINT NOT NULL DEFAULT 0,
    order_status          VARCHAR(50),
    device_type           VARCHAR(50),
    user_location         VARCHAR(100),
    referrer_source       VARCHAR(100)
);

CREATE TABLE analytics.fact_book_interactions (
    interaction_id        VARCHAR(64) PRIMARY KEY,
    book_id               INTEGER NOT NULL,
    user_id               VARCHAR(50),
    session_id            VARCHAR(50),
    interaction_type      VARCHAR(50) NOT NULL
                          CHECK (interaction_type IN ('view', 'add_to_cart', 'purchase', 'review')),
    interaction_timestamp TIMESTAMPTZ NOT NULL,
    value_minor           BIGINT,
    currency              CHAR(3),
    rating                SMALLINT CHECK (rating BETWEEN 1 AND 5),
    page_view_duration    INTEGER CHECK (page_view_duration >= 0),
    came_from             VARCHAR(200),
    device_type           VARCHAR(50),
    user_location         VARCHAR(100)
);

CREATE TABLE analytics.dim_time (
    date_key     DATE PRIMARY KEY,
    year         INTEGER NOT NULL,
    quarter      INTEGER NOT NULL,
    month        INTEGER NOT NULL,
    week         INTEGER NOT NULL,
    day_of_year  INTEGER NOT NULL,
    day_of_month INTEGER NOT NULL,
    day_of_week  INTEGER NOT NULL,
    is_weekend   BOOLEAN NOT NULL,
    is_holiday   BOOLEAN NOT NULL DEFAULT false,
    season       VARCHAR(20) NOT NULL
);

-- Books as the catalog's events describe them (never read from the catalog's database).
CREATE TABLE analytics.dim_books (
    book_id          INTEGER PRIMARY KEY,
    title            VARCHAR(500),
    category_name    VARCHAR(100),
    author_names     TEXT,
    publisher_name   VARCHAR(200),
    price_range      VARCHAR(50) CHECK (price_range IN ('low', 'medium', 'high')),
    publication_year INTEGER,
    format           VARCHAR(50),
    language_code    VARCHAR(10),
    last_updated     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_fact_orders_date ON analytics.fact_orders (order_date);
CREATE INDEX idx_fact_orders_timestamp ON analytics.fact_orders (order_timestamp);
CREATE INDEX idx_fact_orders_user ON analytics.fact_orders (user_id);
CREATE INDEX idx_fact_book_interactions_book ON analytics.fact_book_interactions (book_id);
CREATE INDEX idx_fact_book_interactions_timestamp ON analytics.fact_book_interactions (interaction_timestamp);
