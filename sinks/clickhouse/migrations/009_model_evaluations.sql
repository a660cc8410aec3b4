-- Each back-test (`nudgeflow models evaluate`): every figure of a model beside its naive baseline from the
-- same run, so the dashboard and `nudgeflow report backtest` show how well the models did, not only what
-- they predict. A rerun writes a run of its own (its evaluated_at).
CREATE TABLE IF NOT EXISTS model_evaluations
(
    evaluated_at     DateTime64(3, 'UTC'),
    cutoff           DateTime64(3, 'UTC'),
    horizon_days     UInt16,
    people           UInt64,
    figure           LowCardinality(String),
    model            Float64,
    baseline         Float64,
    lower_is_better  Bool,
    beats_baseline   Bool,
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (evaluated_at, figure)
SETTINGS non_replicated_deduplication_window = 1000;
