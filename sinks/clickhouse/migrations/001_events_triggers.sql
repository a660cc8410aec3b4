-- Raw events, one row per message; replays write the same natural key and collapse on merge.
CREATE TABLE IF NOT EXISTS events
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
PARTITION BY toYYYYMM(timestamp)
ORDER BY (person_id, timestamp, message_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Every nudge that went to the senders; trigger_id is the idempotency key.
CREATE TABLE IF NOT EXISTS triggers
(
    trigger_id     String,
    rule           LowCardinality(String),
    person_id      String,
    channel        LowCardinality(String),
    template_id    LowCardinality(String),
    due_at         DateTime64(3, 'UTC'),
    fired_at       DateTime64(3, 'UTC'),
    cause_event_id Nullable(String),
    context        String,
    inserted_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(due_at)
ORDER BY (rule, trigger_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Messages the worker could not use, with the reason, so a producer can see what it sent wrong.
CREATE TABLE IF NOT EXISTS dead_letters
(
    topic        LowCardinality(String),
    partition    UInt16,
    offset       UInt64,
    reason       String,
    value        String,
    received_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, partition, offset)
SETTINGS non_replicated_deduplication_window = 1000;
