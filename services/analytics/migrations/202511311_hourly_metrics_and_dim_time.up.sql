-- The hourly metrics job's tables, the calendar dimension's filler and its first range.

-- Order lines, for revenue per category. The consumer's migration (202511301, stream
-- aconsumer) creates and fills this table and applies first; this one creates it, with
-- the same definition, only where that one has not run.
CREATE TABLE IF NOT EXISTS analytics.fact_order_lines (
    order_id      VARCHAR(50) NOT NULL REFERENCES analytics.fact_orders (order_id),
    book_id       BIGINT NOT NULL,
    category_id   BIGINT,
    category_name VARCHAR(100) NOT NULL,
    quantity      INTEGER NOT NULL CHECK (quantity > 0),
    revenue_minor BIGINT NOT NULL CHECK (revenue_minor >= 0),
    currency      CHAR(3) NOT NULL,
    PRIMARY KEY (order_id, book_id)
);

-- One row per hour the job computed (whatever the currencies): the figures that do not
-- depend on a currency. Re-running an hour replaces its rows.
CREATE TABLE analytics.hourly_metrics (
    hour_start         TIMESTAMPTZ PRIMARY KEY
                       CHECK (hour_start = date_trunc('hour', hour_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'),
    -- Orders in every currency, over the distinct sessions with a view in the hour.
    total_orders       BIGINT NOT NULL CHECK (total_orders >= 0),
    sessions_with_view BIGINT NOT NULL CHECK (sessions_with_view >= 0),
    conversion_rate    DOUBLE PRECISION NOT NULL CHECK (conversion_rate >= 0),
    computed_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The money figures of one hour in one currency (amounts are never converted).
CREATE TABLE analytics.hourly_metrics_by_currency (
    hour_start                TIMESTAMPTZ NOT NULL
                              REFERENCES analytics.hourly_metrics (hour_start) ON DELETE CASCADE,
    currency                  CHAR(3) NOT NULL,
    total_orders              BIGINT NOT NULL CHECK (total_orders >= 0),
    total_revenue_minor       BIGINT NOT NULL CHECK (total_revenue_minor >= 0),
    average_order_value_minor BIGINT NOT NULL CHECK (average_order_value_minor >= 0),
    -- [{"category_name": ..., "revenue_minor": ..., "order_items": ...}], best first.
    top_categories            JSONB NOT NULL DEFAULT '[]',
    PRIMARY KEY (hour_start, currency)
);

-- Fills dim_time for every day of [first_day, last_day]; days already there are kept
-- as they are (an is_holiday set by hand survives). Returns the days added.
-- day_of_week is ISO (1 Monday .. 7 Sunday), week the ISO week, season the meteorological
-- season of the northern hemisphere (winter: December to February).
CREATE FUNCTION analytics.fill_dim_time(first_day DATE, last_day DATE) RETURNS INTEGER
LANGUAGE sql AS $$
    WITH added AS (
        INSERT INTO analytics.dim_time (
            date_key, year, quarter, month, week, day_of_year, day_of_month, day_of_week,
            is_weekend, is_holiday, season
        )
        SELECT d::date,
               extract(year FROM d)::int,
               extract(quarter FROM d)::int,
               extract(month FROM d)::int,
               extract(week FROM d)::int,
               extract(doy FROM d)::int,
               extract(day FROM d)::int,
               extract(isodow FROM d)::int,
               extract(isodow FROM d) IN (6, 7),
               false,
               CASE
                   WHEN extract(month FROM d) IN (12, 1, 2) THEN 'winter'
                   WHEN extract(month FROM d) IN (3, 4, 5) THEN 'spring'
                   WHEN extract(month FROM d) IN (6, 7, 8) THEN 'summer'
                   ELSE 'autumn'
               END
        FROM generate_series(first_day::timestamp, last_day::timestamp, interval '1 day') AS d
        ON CONFLICT (date_key) DO NOTHING
        RETURNING 1
    )
    SELECT count(*)::int FROM added
$$;

-- The starting range: 2020 to 2030. The yearly job (cloudshelf job extend-dim-time)
-- keeps it ahead of the calendar.
SELECT analytics.fill_dim_time(DATE '2020-01-01', DATE '2030-12-31');
