-- Dead letters keep the message key (the person, on the events topic) so an erasure can find them.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS key Nullable(String) AFTER offset;

-- People erased so far, by hash only (schemas.privacy.person_hash), never by id: the sink drops rows of
-- these people that arrive after the erasure (late events, a replay of the topics from the start).
CREATE TABLE IF NOT EXISTS erasures
(
    person_hash   String,
    request_id    String,
    requested_at  DateTime64(3, 'UTC'),
    erased_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (person_hash, request_id)
