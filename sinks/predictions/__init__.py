"""Predictions from ClickHouse history (docs/architecture.md, "Predictions"): per person, the probability of
still being a customer, expected orders and value over a horizon (BG/NBD with Gamma-Gamma, `clv`), the
propensity to order within it (a classifier over the person's own history, `propensity`), fitted and scored
by `training`, checked against naive baselines by `evaluate`, kept and published by `publish`.

Everything here reads the sink's tables through the one ClickHouse client (`sinks.clickhouse.client.connect`); the
models see only aggregates per person (`features`)."""
