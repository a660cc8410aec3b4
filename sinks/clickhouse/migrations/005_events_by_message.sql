-- Copies of one event collapse on (person_id, message_id) alone. The collector derives `timestamp` from
-- the sentAt skew, so a retried event through another collector replica carries a slightly different
-- timestamp: with it in the sorting key (001) both copies stayed, and with PARTITION BY month two copies
-- either side of midnight on the last day of a month could never merge. Hence no timestamp in the key and
-- no partitioning; the last copy inserted is the one kept.
--
-- A sorting key cannot lose a column in place, so the table is rebuilt and swapped in. The views that read
-- `events` are dropped first and created again on the new table (renaming a view's source table leaves the
-- view fed by neither table). Run while no sink writes (the sink applies migrations before it consumes); the
-- rollups are not touched, they hold the same rows.

DROP VIEW IF EXISTS message_events_mv;
DROP VIEW IF EXISTS messages_daily_mv;
DROP VIEW IF EXISTS orders_mv;
DROP VIEW IF EXISTS active_people_hourly_mv;
DROP VIEW IF EXISTS funnel_daily_mv;

CREATE TABLE IF NOT EXISTS events_by_message
(
    message_id   String,
    person_id    String,
    type         LowCardinality(String),
    event        LowCardinality(String),
    timestamp    DateTime64(3, 'UTC'),
    received_at  Nullable(DateTime64(3, 'UTC')),
    properties   String,
    context      String,
    topic        LowCardinality(String),
    partition    UInt16,
    offset       UInt64,
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (person_id, message_id)
SETTINGS non_replicated_deduplication_window = 1000;

INSERT INTO events_by_message
SELECT message_id, person_id, type, event, timestamp, received_at, properties, context, topic, partition, offset,
       inserted_at
FROM events;

RENAME TABLE events TO events_by_time_retired, events_by_message TO events;

DROP TABLE events_by_time_retired;

CREATE MATERIALIZED VIEW IF NOT EXISTS message_events_mv TO message_events AS
SELECT JSONExtractString(properties, 'trigger_id') AS trigger_id, event, person_id, timestamp AS at
FROM events
WHERE event IN ('Email Delivered', 'Email Opened', 'Email Clicked', 'Email Bounced', 'Email Unsubscribed',
                'SMS Delivered', 'SMS Clicked')
  AND JSONExtractString(properties, 'trigger_id') != '';

CREATE MATERIALIZED VIEW IF NOT EXISTS messages_daily_mv TO messages_daily AS
SELECT toDate(timestamp) AS day, event, uniqExactState(JSONExtractString(properties, 'trigger_id')) AS triggers
FROM events
WHERE event IN ('Email Delivered', 'Email Opened', 'Email Clicked', 'Email Bounced', 'Email Unsubscribed',
                'SMS Delivered', 'SMS Clicked')
  AND JSONExtractString(properties, 'trigger_id') != ''
GROUP BY day, event;

CREATE MATERIALIZED VIEW IF NOT EXISTS orders_mv TO orders AS
SELECT person_id, JSONExtractString(properties, 'order_id') AS order_id, timestamp AS at,
       coalesce(JSONExtract(properties, 'revenue', 'Nullable(Float64)'), JSONExtract(properties, 'total', 'Nullable(Float64)'),
                JSONExtract(properties, 'value', 'Nullable(Float64)'), 0) AS revenue
FROM events
WHERE event = 'Order Completed';

CREATE MATERIALIZED VIEW IF NOT EXISTS active_people_hourly_mv TO active_people_hourly AS
SELECT toStartOfHour(timestamp) AS hour, uniqExactState(person_id) AS people
FROM events
GROUP BY hour;

CREATE MATERIALIZED VIEW IF NOT EXISTS funnel_daily_mv TO funnel_daily AS
SELECT toDate(timestamp) AS day, event, uniqExactState(message_id) AS events, uniqExactState(person_id) AS people
FROM events
WHERE event IN ('Product Viewed', 'Product Added', 'Checkout Started', 'Order Completed')
GROUP BY day, event
