-- The storefront's own store: orders placed at checkout, their lines, the outbox their
-- events wait in (order.placed, order.cancelled), and PlaceOrder's idempotency keys.
CREATE SCHEMA IF NOT EXISTS storefront;

-- Money in minor units of the order's one currency (the seed's fact_orders columns:
-- total_amount, discount_amount, tax_amount, shipping_cost, currency).
CREATE TABLE storefront.orders (
    -- Derived from the shopper and PlaceOrder's request_id: a retry names the same order.
    id              UUID PRIMARY KEY,
    -- Newest-first paging key (ListOrders): increases with every order.
    seq             BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    -- The shopper (the token's `sub`).
    user_id         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('placed', 'cancelled')),
    currency        CHAR(3) NOT NULL,
    subtotal_minor  BIGINT NOT NULL CHECK (subtotal_minor >= 0),
    discount_minor  BIGINT NOT NULL CHECK (discount_minor >= 0),
    tax_minor       BIGINT NOT NULL CHECK (tax_minor >= 0),
    shipping_minor  BIGINT NOT NULL CHECK (shipping_minor >= 0),
    total_minor     BIGINT NOT NULL CHECK (total_minor >= 0),
    total_items     INTEGER NOT NULL CHECK (total_items > 0),
    payment_method  TEXT NOT NULL,
    -- The etag of the cart checked out.
    cart_etag       TEXT NOT NULL,
    -- PlaceOrder's request_id as the client sent it.
    request_id      UUID NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    cancelled_at    TIMESTAMPTZ,
    -- The aggregate version events carry: 1 when placed, +1 with every change.
    version         BIGINT NOT NULL DEFAULT 1,
    UNIQUE (user_id, request_id)
);
CREATE INDEX idx_orders_user_newest ON storefront.orders (user_id, seq DESC);

CREATE TABLE storefront.order_lines (
    order_id        UUID NOT NULL REFERENCES storefront.orders (id) ON DELETE CASCADE,
    line_no         INTEGER NOT NULL,
    book_id         BIGINT NOT NULL,
    title           TEXT NOT NULL,
    unit_price_minor BIGINT NOT NULL CHECK (unit_price_minor >= 0),
    quantity        INTEGER NOT NULL CHECK (quantity > 0),
    category_id     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, line_no)
);

-- Stock given back for a checkout that could not be completed, per order id. Each release
-- moves the order's next stock reservation to a new AdjustInventory request_id, so a retry
-- after a release reserves again instead of being answered with the released reservation
-- (services/storefront/orders.py explains the sequence).
CREATE TABLE storefront.reservation_releases (
    order_id        UUID PRIMARY KEY,
    releases        INTEGER NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The outbox and its dead letters, in the runtime's shape (cloudshelf/runtime/events.py;
-- the catalog's tables after its migration 202511102).
CREATE TABLE storefront.outbox (
    id                UUID PRIMARY KEY,
    event_type        VARCHAR(100) NOT NULL,
    aggregate_id      VARCHAR(100) NOT NULL,
    aggregate_version BIGINT NOT NULL DEFAULT 0,
    data_type         TEXT NOT NULL DEFAULT '',
    payload           JSONB NOT NULL,
    traceparent       VARCHAR(100),
    tracestate        TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at      TIMESTAMPTZ,
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    next_attempt_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    claimed_until     TIMESTAMPTZ
);
CREATE INDEX idx_outbox_unpublished ON storefront.outbox (created_at) WHERE published_at IS NULL;
CREATE INDEX idx_outbox_due ON storefront.outbox (next_attempt_at, created_at)
    WHERE published_at IS NULL;
CREATE INDEX idx_outbox_published ON storefront.outbox (published_at)
    WHERE published_at IS NOT NULL;

CREATE TABLE storefront.outbox_dead_letters (
    id                UUID PRIMARY KEY,
    event_type        VARCHAR(100) NOT NULL,
    aggregate_id      VARCHAR(100) NOT NULL,
    aggregate_version BIGINT NOT NULL,
    data_type         TEXT NOT NULL,
    payload           JSONB NOT NULL,
    traceparent       VARCHAR(100),
    tracestate        TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    attempts          INTEGER NOT NULL,
    reason            TEXT NOT NULL,
    dead_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_outbox_dead_letters_dead_at ON storefront.outbox_dead_letters (dead_at);

-- Idempotency keys in the runtime's shape (cloudshelf/runtime/idempotency.py).
CREATE TABLE storefront.idempotency_keys (
    caller        TEXT NOT NULL,
    key           UUID NOT NULL,
    request_hash  BYTEA NOT NULL,
    -- NULL only inside the transaction that runs the request: it is set before commit.
    response      BYTEA,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_keys_expires_at ON storefront.idempotency_keys (expires_at);
