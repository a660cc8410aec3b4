"""The erasure statements: every person-level table and every rollup of the migrations is covered."""

from __future__ import annotations

import re

from sinks.clickhouse.erasure import PERSON_TABLES, ROLLUPS, person_parameters
from sinks.clickhouse.schema import migration_files

TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)\s*\((.*?)\)\s*ENGINE\s*=\s*(\w+)", re.S)
RENAME = re.compile(r"RENAME TABLE (.*?);", re.S)
DROP = re.compile(r"DROP TABLE (?:IF EXISTS )?(\w+)")


def _tables() -> dict[str, tuple[str, str]]:
    """The tables the migrations leave behind, by the name they end up with (a table built under a new
    name and renamed into place is counted under its final name; a dropped one not at all)."""
    sql = "\n".join(text for _, text in migration_files())
    tables = {name: (columns, engine) for name, columns, engine in TABLE.findall(sql)}
    for renames in RENAME.findall(sql):
        for pair in renames.split(","):
            old, _, new = (word.strip() for word in pair.partition(" TO "))
            if old in tables:
                tables[new] = tables.pop(old)
    for dropped in DROP.findall(sql):
        tables.pop(dropped, None)
    return tables


def test_every_table_with_a_person_column_is_erased() -> None:
    with_person = {name for name, (columns, _) in _tables().items() if re.search(r"^\s*person_id\s", columns, re.M)}
    assert with_person  # the pattern still reads the migrations
    assert with_person <= {target.table for target in PERSON_TABLES}


def test_every_aggregating_rollup_is_rebuilt() -> None:
    aggregating = {name for name, (_, engine) in _tables().items() if engine == "AggregatingMergeTree"}
    assert aggregating == {rollup.table for rollup in ROLLUPS}


def test_rebuilds_leave_the_person_out_and_touch_only_the_affected_buckets() -> None:
    for rollup in ROLLUPS:
        rebuild = rollup.rebuild_sql()
        assert rebuild.startswith(f"INSERT INTO {rollup.table} SELECT")
        assert "NOT has({people:Array(String)}, person_id)" in rebuild
        assert f"has({{buckets:Array(UInt32)}}, {rollup.source_bucket})" in rebuild
        assert (
            rollup.delete_sql() == f"DELETE FROM {rollup.table} WHERE has({{buckets:Array(UInt32)}}, {rollup.bucket})"
        )


def test_ids_are_bound_as_parameters_and_looked_for_in_raw_dead_letters_with_contact_digests() -> None:
    contact = "contact:email:" + "d" * 64
    assert person_parameters(["ana", 'o"brien', contact]) == {
        "people": ["ana", 'o"brien', contact],
        "needles": ["ana", 'o"brien', contact, "d" * 64],
    }


def test_the_events_table_collapses_copies_on_person_and_message_alone() -> None:
    engine = _tables()["events"][1]
    last = [text for name, text in migration_files() if "events_by_message" in text][-1]
    assert engine == "ReplacingMergeTree"
    assert "ORDER BY (person_id, message_id)" in last and "PARTITION BY" not in last.split("ENGINE")[1]
