-- Proof of consent: each change of a person's email or SMS consent with its source and evidence. One row per
-- message and channel: a replay of the same event collapses on merge.
CREATE TABLE IF NOT EXISTS consent_changes
(
    person_id    String,
    channel      LowCardinality(String),
    state        LowCardinality(String),
    previous     LowCardinality(Nullable(String)),
    source       LowCardinality(String),
    at           DateTime64(3, 'UTC'),
    message_id   String,
    ip           Nullable(String),
    user_agent   Nullable(String),
    trigger_id   Nullable(String),
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (person_id, channel, at, message_id)
SETTINGS non_replicated_deduplication_window = 1000;
