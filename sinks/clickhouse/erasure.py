"""Forgetting one person in ClickHouse (right to erasure): the statements, and running them in a safe order.

Person-level tables lose the person's rows through lightweight `DELETE FROM` (every table here is a plain
MergeTree-family table without projections, where lightweight deletes work on chDB and on a server alike).

Rollups are the hard part: an AggregatingMergeTree row holds a uniqExact state of many people, and a state
cannot forget one member. The rollups are therefore *recomputed*: every rollup row (bucket: day or hour)
the person contributed to is deleted and rebuilt from the raw rows of everyone else, with the same SELECT
as its materialized view in 003_rollups.sql. Counts stay exact, not approximate. Two properties make this
safe without locks:

* uniqExact states are idempotent under merge, so a bucket rebuilt while the view also adds a state for a
  concurrent insert counts every row once.
* Rollups are rebuilt *before* the raw rows are deleted, excluding the person explicitly. A crash half way
  is repaired by running the whole erasure again: the affected buckets are found from raw rows that are
  still there, or were already rebuilt when the raw rows are gone.

The person's anonymous ids (from their profile snapshot, kept when identity merged them) are erased too:
events sent before they logged in are theirs as much as the later ones. Each id is looked for as written
and as stored (an id that was an email address is stored as its contact id, sinks/clickhouse/digests.py).

Dead letters are text nobody validated: one is the person's when its key is one of their ids or when its
value contains one anywhere (the digest of an address included). A short id may take a stranger's dead
letter with it; forgetting too much of what was never processed is the side to err on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from schemas.privacy import CONTACT_PREFIX, person_hash

if TYPE_CHECKING:
    from sinks.clickhouse.rows import RowOptions

PEOPLE = "{people:Array(String)}"
NEEDLES = "{needles:Array(String)}"
BUCKETS = "{buckets:Array(UInt32)}"


@dataclass(frozen=True)
class PersonTable:
    """A person-level table and the condition that picks out the rows of the people erased."""

    table: str
    matches: str  # a WHERE condition over the bound {people} (and {needles}) parameters


# Every table that holds rows about a person. dead_letters is matched by key, and by any of the person's
# ids or contact digests appearing anywhere in the raw message (position, so any number of them).
PERSON_TABLES: tuple[PersonTable, ...] = (
    PersonTable("events", f"has({PEOPLE}, person_id)"),
    PersonTable("triggers", f"has({PEOPLE}, person_id)"),
    PersonTable("suppressions", f"has({PEOPLE}, person_id)"),
    PersonTable("segment_changes", f"has({PEOPLE}, person_id)"),
    PersonTable("consent_changes", f"has({PEOPLE}, person_id)"),
    PersonTable("profile_snapshots", f"has({PEOPLE}, person_id)"),
    PersonTable("orders", f"has({PEOPLE}, person_id)"),
    PersonTable("message_events", f"has({PEOPLE}, person_id)"),
    PersonTable("scores", f"has({PEOPLE}, person_id)"),
    PersonTable(
        "dead_letters",
        f"has({PEOPLE}, ifNull(key, '')) OR arrayExists(needle -> position(value, needle) > 0, {NEEDLES})",
    ),
)

MESSAGE_EVENT_FILTER = (
    "event IN ('Email Delivered', 'Email Opened', 'Email Clicked', 'Email Bounced', 'Email Unsubscribed', "
    "'SMS Delivered', 'SMS Clicked') AND JSONExtractString(properties, 'trigger_id') != ''"
)


@dataclass(frozen=True)
class Rollup:
    """One aggregate table and how to rebuild some of its buckets from its source."""

    table: str
    bucket: str  # the rollup row's bucket as a UInt32 (yyyymmdd for days, epoch seconds for hours)
    source: str
    source_bucket: str  # the same bucket computed from a source row
    select: str  # the view's SELECT, with {where} for the rows to aggregate and GROUP BY

    def affected_sql(self) -> str:
        return f"SELECT DISTINCT {self.source_bucket} FROM {self.source} WHERE has({PEOPLE}, person_id)"

    def delete_sql(self) -> str:
        return f"DELETE FROM {self.table} WHERE has({BUCKETS}, {self.bucket})"

    def rebuild_sql(self) -> str:
        where = f"has({BUCKETS}, {self.source_bucket}) AND NOT has({PEOPLE}, person_id)"
        return f"INSERT INTO {self.table} " + self.select.format(where=where)


DAY_OF = "toYYYYMMDD(day)"
ROLLUPS: tuple[Rollup, ...] = (
    Rollup(
        "triggers_daily",
        DAY_OF,
        "triggers",
        "toYYYYMMDD(toDate(fired_at))",
        "SELECT toDate(fired_at) AS day, rule, ifNull(variant, '') AS variant, channel, "
        "uniqExactState(trigger_id) AS sent FROM triggers WHERE {where} GROUP BY day, rule, variant, channel",
    ),
    Rollup(
        "suppressions_daily",
        DAY_OF,
        "suppressions",
        "toYYYYMMDD(toDate(decided_at))",
        "SELECT toDate(decided_at) AS day, rule, reason, uniqExactState(trigger_id) AS suppressed "
        "FROM suppressions WHERE {where} GROUP BY day, rule, reason",
    ),
    Rollup(
        "messages_daily",
        DAY_OF,
        "events",
        "toYYYYMMDD(toDate(timestamp))",
        "SELECT toDate(timestamp) AS day, event, uniqExactState(JSONExtractString(properties, 'trigger_id')) "
        f"AS triggers FROM events WHERE {MESSAGE_EVENT_FILTER} AND {{where}} GROUP BY day, event",
    ),
    Rollup(
        "active_people_hourly",
        "toUnixTimestamp(hour)",
        "events",
        "toUnixTimestamp(toStartOfHour(timestamp))",
        "SELECT toStartOfHour(timestamp) AS hour, uniqExactState(person_id) AS people FROM events "
        "WHERE {where} GROUP BY hour",
    ),
    Rollup(
        "funnel_daily",
        DAY_OF,
        "events",
        "toYYYYMMDD(toDate(timestamp))",
        "SELECT toDate(timestamp) AS day, event, uniqExactState(message_id) AS events, "
        "uniqExactState(person_id) AS people FROM events "
        "WHERE event IN ('Product Viewed', 'Product Added', 'Checkout Started', 'Order Completed') AND {where} "
        "GROUP BY day, event",
    ),
)

ANONYMOUS_IDS_SQL = (
    "SELECT DISTINCT arrayJoin(JSONExtract(profile, 'anonymous_ids', 'Array(String)')) "
    f"FROM profile_snapshots WHERE has({PEOPLE}, person_id)"
)


def identities(person_id: str, options: RowOptions) -> list[str]:
    """One id as it may be found: as written, and as stored when that differs (an address, a number)."""
    return list(dict.fromkeys((person_id, options.person(person_id))))


def erasure_hashes(person_id: str, options: RowOptions) -> list[str]:
    """The hashes an erasure is recorded under: of the id as written and as stored, so a row is recognised
    whichever form it carries."""
    return [person_hash(identity, options.hash_key) for identity in identities(person_id, options)]


def person_parameters(people: list[str]) -> dict[str, Any]:
    """The bound parameters of every statement about these ids: the ids, and what to look for in raw text
    (the ids, and the contact digest inside a contact id, as an address in text is stored)."""
    digests = [person.rsplit(":", 1)[1] for person in people if person.startswith(CONTACT_PREFIX) and ":" in person]
    return {"people": people, "needles": list(dict.fromkeys((*people, *digests)))}


def people_of(client: Any, person_id: str, options: RowOptions) -> list[str]:
    """The person's ids and the anonymous ids their profile says were merged into it, each as written
    and as stored."""
    own = identities(person_id, options)
    rows = client.query(ANONYMOUS_IDS_SQL, parameters={"people": own}).result_rows
    anonymous = sorted({str(found) for (found,) in rows if found} - set(own))
    return list(dict.fromkeys((*own, *(identity for found in anonymous for identity in identities(found, options)))))


def erase_person(client: Any, person_id: str, options: RowOptions) -> dict[str, int]:
    """Delete everything about the person; returns the rows deleted per table. Blocking; safe to rerun."""
    people = people_of(client, person_id, options)
    parameters = person_parameters(people)
    for rollup in ROLLUPS:
        rows = client.query(rollup.affected_sql(), parameters=parameters).result_rows
        buckets = sorted({int(bucket) for (bucket,) in rows})
        if buckets:
            client.command(rollup.delete_sql(), parameters={**parameters, "buckets": buckets})
            client.command(rollup.rebuild_sql(), parameters={**parameters, "buckets": buckets})
    deleted: dict[str, int] = {}
    for target in PERSON_TABLES:
        where = target.matches
        found = int(
            client.query(f"SELECT count() FROM {target.table} WHERE {where}", parameters=parameters).result_rows[0][0]
        )
        if found:
            client.command(f"DELETE FROM {target.table} WHERE {where}", parameters=parameters)
        deleted[target.table] = found
    return deleted
