-- Triggers now carry the A/B variant they were sent as; NULL for rules without variants.
ALTER TABLE triggers ADD COLUMN IF NOT EXISTS variant LowCardinality(Nullable(String)) AFTER cause_event_id;

-- Nudges the policy gate held back, with the reason. One row per trigger_id: a replay, or the same
-- trigger decided again later, collapses to the latest decision (version = decided_at).
CREATE TABLE IF NOT EXISTS suppressions
(
    trigger_id     String,
    rule           LowCardinality(String),
    person_id      String,
    channel        LowCardinality(String),
    template_id    LowCardinality(String),
    due_at         DateTime64(3, 'UTC'),
    fired_at       DateTime64(3, 'UTC'),
    cause_event_id Nullable(String),
    variant        LowCardinality(Nullable(String)),
    context        String,
    reason         LowCardinality(String),
    detail         String,
    decided_at     DateTime64(3, 'UTC'),
    inserted_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(decided_at)
ORDER BY trigger_id
SETTINGS non_replicated_deduplication_window = 1000;

-- Segment entries and exits. Ordered by segment first, so "who was in S on day D" reads one key range.
CREATE TABLE IF NOT EXISTS segment_changes
(
    segment      LowCardinality(String),
    person_id    String,
    at           DateTime64(3, 'UTC'),
    change       LowCardinality(String),
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (segment, person_id, at, change)
SETTINGS non_replicated_deduplication_window = 1000;

-- The latest profile per person. version = event_count, which only grows, so an older snapshot
-- replayed after a newer one never wins. The whole profile is kept as JSON because the model grows.
CREATE TABLE IF NOT EXISTS profile_snapshots
(
    person_id    String,
    version      UInt64,
    first_seen   Nullable(DateTime64(3, 'UTC')),
    last_seen    Nullable(DateTime64(3, 'UTC')),
    event_count  UInt64,
    order_count  UInt64,
    revenue      Float64,
    timezone     LowCardinality(Nullable(String)),
    locale       LowCardinality(Nullable(String)),
    profile      String,
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY person_id
SETTINGS non_replicated_deduplication_window = 1000;
