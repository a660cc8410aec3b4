"""Everything downstream of the topics: the ClickHouse writer (`clickhouse`), the analytics over what it wrote
(`analytics`: questions, reports, the dashboard), the models trained from it (`predictions`) and the sender
that renders and delivers the nudges (`sender`). Only `streams.cli` imports across into `streams`.
"""
