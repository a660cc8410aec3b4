-- Rollups for dashboards, fed by materialized views on insert.
--
-- Replays insert the same rows again, and a materialized view fires on every insert, so a plain
-- count() or sum() rollup would double count. Counts here are therefore uniqExact states over the
-- natural key (trigger_id, message_id, person_id) in AggregatingMergeTree: merging a state with a
-- duplicate of itself changes nothing. Sums (revenue) cannot be made idempotent that way, so orders
-- and message feedback go into narrow ReplacingMergeTree tables keyed by their natural key and are
-- read with FINAL at query time. Each view is followed by a backfill from its source, so a database
-- that already holds data gets complete rollups; the backfill is idempotent for the same reasons.

CREATE TABLE IF NOT EXISTS triggers_daily
(
    day      Date,
    rule     LowCardinality(String),
    variant  LowCardinality(String),
    channel  LowCardinality(String),
    sent     AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (day, rule, variant, channel);

CREATE MATERIALIZED VIEW IF NOT EXISTS triggers_daily_mv TO triggers_daily AS
SELECT toDate(fired_at) AS day, rule, ifNull(variant, '') AS variant, channel, uniqExactState(trigger_id) AS sent
FROM triggers
GROUP BY day, rule, variant, channel;

INSERT INTO triggers_daily
SELECT toDate(fired_at) AS day, rule, ifNull(variant, '') AS variant, channel, uniqExactState(trigger_id) AS sent
FROM triggers
GROUP BY day, rule, variant, channel;

CREATE TABLE IF NOT EXISTS suppressions_daily
(
    day         Date,
    rule        LowCardinality(String),
    reason      LowCardinality(String),
    suppressed  AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (day, rule, reason);

CREATE MATERIALIZED VIEW IF NOT EXISTS suppressions_daily_mv TO suppressions_daily AS
SELECT toDate(decided_at) AS day, rule, reason, uniqExactState(trigger_id) AS suppressed
FROM suppressions
GROUP BY day, rule, reason;

INSERT INTO suppressions_daily
SELECT toDate(decided_at) AS day, rule, reason, uniqExactState(trigger_id) AS suppressed
FROM suppressions
GROUP BY day, rule, reason;

-- Email/SMS feedback about a nudge, one row per (trigger, event); rule and variant come from
-- triggers at query time because the senders do not always repeat them.
CREATE TABLE IF NOT EXISTS message_events
(
    trigger_id  String,
    event       LowCardinality(String),
    person_id   String,
    at          DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (trigger_id, event);

CREATE MATERIALIZED VIEW IF NOT EXISTS message_events_mv TO message_events AS
SELECT JSONExtractString(properties, 'trigger_id') AS trigger_id, event, person_id, timestamp AS at
FROM events
WHERE event IN ('Email Delivered', 'Email Opened', 'Email Clicked', 'Email Bounced', 'Email Unsubscribed',
                'SMS Delivered', 'SMS Clicked')
  AND JSONExtractString(properties, 'trigger_id') != '';

INSERT INTO message_events
SELECT JSONExtractString(properties, 'trigger_id') AS trigger_id, event, person_id, timestamp AS at
FROM events
WHERE event IN ('Email Delivered', 'Email Opened', 'Email Clicked', 'Email Bounced', 'Email Unsubscribed',
                'SMS Delivered', 'SMS Clicked')
  AND JSONExtractString(properties, 'trigger_id') != '';

-- Message feedback per day, counted once per nudge, for the rates-over-time chart.
CREATE TABLE IF NOT EXISTS messages_daily
(
    day       Date,
    event     LowCardinality(String),
    triggers  AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (day, event);

CREATE MATERIALIZED VIEW IF NOT EXISTS messages_daily_mv TO messages_daily AS
SELECT toDate(timestamp) AS day, event, uniqExactState(JSONExtractString(properties, 'trigger_id')) AS triggers
FROM events
WHERE event IN ('Email Delivered', 'Email Opened', 'Email Clicked', 'Email Bounced', 'Email Unsubscribed',
                'SMS Delivered', 'SMS Clicked')
  AND JSONExtractString(properties, 'trigger_id') != ''
GROUP BY day, event;

INSERT INTO messages_daily
SELECT toDate(timestamp) AS day, event, uniqExactState(JSONExtractString(properties, 'trigger_id')) AS triggers
FROM events
WHERE event IN ('Email Delivered', 'Email Opened', 'Email Clicked', 'Email Bounced', 'Email Unsubscribed',
                'SMS Delivered', 'SMS Clicked')
  AND JSONExtractString(properties, 'trigger_id') != ''
GROUP BY day, event;

-- Orders, one row per order_id, for conversion, attribution, lifetime value and churn.
CREATE TABLE IF NOT EXISTS orders
(
    person_id  String,
    order_id   String,
    at         DateTime64(3, 'UTC'),
    revenue    Float64
)
ENGINE = ReplacingMergeTree
ORDER BY (person_id, order_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS orders_mv TO orders AS
SELECT person_id, JSONExtractString(properties, 'order_id') AS order_id, timestamp AS at,
       coalesce(JSONExtract(properties, 'revenue', 'Nullable(Float64)'), JSONExtract(properties, 'total', 'Nullable(Float64)'),
                JSONExtract(properties, 'value', 'Nullable(Float64)'), 0) AS revenue
FROM events
WHERE event = 'Order Completed';

INSERT INTO orders
SELECT person_id, JSONExtractString(properties, 'order_id') AS order_id, timestamp AS at,
       coalesce(JSONExtract(properties, 'revenue', 'Nullable(Float64)'), JSONExtract(properties, 'total', 'Nullable(Float64)'),
                JSONExtract(properties, 'value', 'Nullable(Float64)'), 0) AS revenue
FROM events
WHERE event = 'Order Completed';

CREATE TABLE IF NOT EXISTS active_people_hourly
(
    hour    DateTime('UTC'),
    people  AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
ORDER BY hour;

CREATE MATERIALIZED VIEW IF NOT EXISTS active_people_hourly_mv TO active_people_hourly AS
SELECT toStartOfHour(timestamp) AS hour, uniqExactState(person_id) AS people
FROM events
GROUP BY hour;

INSERT INTO active_people_hourly
SELECT toStartOfHour(timestamp) AS hour, uniqExactState(person_id) AS people
FROM events
GROUP BY hour;

CREATE TABLE IF NOT EXISTS funnel_daily
(
    day     Date,
    event   LowCardinality(String),
    events  AggregateFunction(uniqExact, String),
    people  AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (day, event);

CREATE MATERIALIZED VIEW IF NOT EXISTS funnel_daily_mv TO funnel_daily AS
SELECT toDate(timestamp) AS day, event, uniqExactState(message_id) AS events, uniqExactState(person_id) AS people
FROM events
WHERE event IN ('Product Viewed', 'Product Added', 'Checkout Started', 'Order Completed')
GROUP BY day, event;

INSERT INTO funnel_daily
SELECT toDate(timestamp) AS day, event, uniqExactState(message_id) AS events, uniqExactState(person_id) AS people
FROM events
WHERE event IN ('Product Viewed', 'Product Added', 'Checkout Started', 'Order Completed')
GROUP BY day, event
