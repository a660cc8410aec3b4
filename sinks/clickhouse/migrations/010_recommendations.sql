-- Each product's recommended products (schemas.recommendations.Recommendation), one row per product and run of
-- `nudgeflow models train`: a product's latest inserted row is what the recommendations topic holds for it. An
-- empty `recommended` records the tombstone a published run sent for a product that lost its recommendations.
-- A rerun of the same version collapses on merge to its latest.
CREATE TABLE IF NOT EXISTS recommendations
(
    product_id     String,
    model_version  LowCardinality(String),
    computed_at    DateTime64(3, 'UTC'),
    recommended    Array(String),
    inserted_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (product_id, model_version)
SETTINGS non_replicated_deduplication_window = 1000;
