-- Predicted scores per person (schemas.scores.Score), one row per person and training run: the latest run's
-- row of a person is their current score. A rerun of the same version collapses on merge to its latest.
CREATE TABLE IF NOT EXISTS scores
(
    person_id               String,
    model_version           LowCardinality(String),
    scored_at               DateTime64(3, 'UTC'),
    horizon_days            UInt16,
    p_alive                 Float64,
    churn_risk              Float64,
    expected_orders         Float64,
    predicted_clv           Float64,
    purchase_propensity     Float64,
    expected_next_order_at  Nullable(DateTime64(3, 'UTC')),
    inserted_at             DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (person_id, model_version)
SETTINGS non_replicated_deduplication_window = 1000;
