-- The sender's ledger: each state a nudge passed through (sending, committed, sent, retrying, unconfirmed,
-- failed, expired), keyed by trigger id. It names no person: the trigger id leads to the triggers table. A
-- replay of the same record collapses on merge.
CREATE TABLE IF NOT EXISTS deliveries
(
    trigger_id           String,
    state                LowCardinality(String),
    rule                 LowCardinality(String),
    channel              LowCardinality(String),
    provider             LowCardinality(String),
    attempt              UInt16,
    at                   DateTime64(3, 'UTC'),
    reason               String,
    provider_message_id  Nullable(String),
    inserted_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (trigger_id, at, state, attempt)
SETTINGS non_replicated_deduplication_window = 1000;
