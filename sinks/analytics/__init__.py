"""The analytics over what the sink wrote: the questions asked of ClickHouse (`queries`), attribution and
significance of A/B results, `nudgeflow report`'s rendering, and the dashboard with its web API (`web`).

It may import `schemas` and `sinks.clickhouse` (the client, the row options); it writes nothing but the
answers it serves.
"""
