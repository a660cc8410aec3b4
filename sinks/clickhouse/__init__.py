"""The ClickHouse writer: the sink that turns the topics into rows (`writer`, `rows`), the tables it writes
(`migrations`, applied by `schema`), the digests that stand in for contacts (`digests`), erasure of a person's
rows (`erasure`), the client factory (`client`) and the sink's metrics.

It may import `schemas` only; the analytics and the predictions read what it writes, never the other way.
"""
