"""Two sinks in one consumer group on the real broker and one chDB: the one that processes an erasure is not
the one holding the person's events, and the other still writes none of their later or replayed rows back -
dead letters included."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from schemas.privacy import ErasureRequest, person_hash
from schemas.settings import Settings
from schemas.triggers import DeadLetter
from sinks.clickhouse.rows import EVENTS, RowOptions, event_row
from sinks.clickhouse.writer import ClickHouseSink, routes_for
from tests.integration.sinks.clickhouse.test_privacy import found_anywhere
from tests.integration.sinks.scenario import track

pytestmark = pytest.mark.integration

ANA, BEN = "person-ana-5e1", "person-ben-8a0"


def count(client: Any, sql: str, **parameters: Any) -> int:
    return int(client.query(sql, parameters=parameters).result_rows[0][0])


def rows_about(client: Any, person: str) -> int:
    return count(client, "SELECT count() FROM events WHERE person_id = {p:String}", p=person) + count(
        client,
        "SELECT count() FROM dead_letters WHERE ifNull(key, '') = {p:String} OR position(value, {p:String}) > 0",
        p=person,
    )


async def wait_for(condition: Callable[[], bool], within: float = 60, extra: Any = None) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await asyncio.to_thread(condition):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"condition not met in time; {extra}")


def letter(settings: Settings, key: str | None, value: dict[str, Any], offset: int) -> bytes:
    dead = DeadLetter(
        reason="invalid event: timestamp: Field required",
        topic=settings.events_topic,
        partition=0,
        offset=offset,
        key=key,
        value=orjson.dumps(value).decode(),
        received_at=datetime.now(UTC),
    )
    return dead.model_dump_json().encode()


async def test_a_sink_holding_the_person_s_partitions_writes_nothing_back_after_another_sink_erased_them(
    sink_settings: Settings, clickhouse: Any, producer: KafkaProducer
) -> None:
    settings = sink_settings
    now = datetime.now(UTC)
    eraser, holder = ClickHouseSink(settings, clickhouse), ClickHouseSink(settings, clickhouse)
    tasks = [asyncio.create_task(eraser.run()), asyncio.create_task(holder.run())]
    try:
        # The topics written to ClickHouse and the privacy topic.
        every = (len(routes_for(settings)) + 1) * settings.partitions
        # Settled: every partition held once, and each sink holding some of each topic (mid-rebalance one sink
        # may briefly hold everything).
        await wait_for(
            lambda: (
                len(eraser.assignment()) + len(holder.assignment()) == every
                and all(
                    {tp.topic for tp in sink.assignment()} >= {settings.privacy_topic, settings.events_topic}
                    for sink in (eraser, holder)
                )
                and any(tp.topic == settings.dead_letter_topic for tp in holder.assignment())
            )
        )
        assert not eraser.assignment() & holder.assignment()
        # The erasure goes to a partition of one sink, the person's events and letters to partitions of the other.
        privacy = min(tp.partition for tp in eraser.assignment() if tp.topic == settings.privacy_topic)
        events = min(tp.partition for tp in holder.assignment() if tp.topic == settings.events_topic)
        letters = min(tp.partition for tp in holder.assignment() if tp.topic == settings.dead_letter_topic)

        first = [track("Product Viewed", ANA, now, product_id=f"sku-{n}") for n in range(3)]
        for value in first:
            producer.send(settings.events_topic, key=ANA.encode(), value=value, partition=events)
        producer.send(settings.events_topic, key=BEN.encode(), value=track("Signed Up", BEN, now), partition=events)
        producer.flush()
        await wait_for(lambda: rows_about(clickhouse, ANA) == 3 and rows_about(clickhouse, BEN) == 1)
        assert holder.stats.rows_written["events"] == 4 and eraser.stats.rows_written["events"] == 0

        request = ErasureRequest(request_id=str(uuid.uuid4()), person_id=ANA, requested_at=now)
        producer.send(settings.privacy_topic, key=ANA.encode(), value=request.to_json(), partition=privacy).get(30)
        await wait_for(lambda: eraser.stats.erasures == 1)
        assert rows_about(clickhouse, ANA) == 0

        # Her events again (a replay of the topic), a later one, and dead letters naming her, all to the holder;
        # then one of Ben's, to know the holder has read past them.
        for value in [*first, track("Order Completed", ANA, now, order_id="o-1", revenue=5)]:
            producer.send(settings.events_topic, key=ANA.encode(), value=value, partition=events)
        keyed = letter(settings, ANA, {"type": "track", "userId": ANA}, offset=1)
        unkeyed = letter(settings, None, {"type": "track", "anonymousId": "a-1", "userId": ANA}, offset=2)
        producer.send(settings.dead_letter_topic, key=ANA.encode(), value=keyed, partition=letters)
        producer.send(settings.dead_letter_topic, value=unkeyed, partition=letters)
        producer.send(
            settings.events_topic,
            key=BEN.encode(),
            value=track("Product Viewed", BEN, now, product_id="s"),
            partition=events,
        )
        producer.flush()
        await wait_for(lambda: rows_about(clickhouse, BEN) == 2, within=20, extra=(holder.stats, eraser.stats))
        await wait_for(lambda: holder.stats.rows_dropped_as_erased == 6)
    finally:
        for sink in (eraser, holder):
            sink.stop()
        await asyncio.gather(*tasks)
    assert holder.stats.erasures == 0  # the holder only ever learnt of her from the erasures table
    assert rows_about(clickhouse, ANA) == 0
    assert found_anywhere(clickhouse, [ANA]) == []
    assert rows_about(clickhouse, BEN) == 2


async def test_rows_written_while_another_sink_erased_the_person_are_erased_after_the_insert(
    sink_settings: Settings, clickhouse: Any
) -> None:
    """The race the check before a batch cannot close: its erasure list was read, then another sink recorded
    and carried out an erasure, then this sink's insert landed. The read after the insert catches it."""
    settings = sink_settings
    sink = ClickHouseSink(settings, clickhouse)
    await sink._refresh_erased()  # the check before the batch: nobody erased yet
    options = RowOptions.of(settings)
    values = [track("Product Viewed", person, datetime.now(UTC), product_id="s") for person in (ANA, ANA, BEN)]
    rows = [event_row(value, settings.events_topic, 0, n, options) for n, value in enumerate(values)]
    # Another sink records the erasure (it then finds nothing of hers to delete yet)...
    clickhouse.insert(
        "erasures",
        [[person_hash(ANA, settings.hash_key), "r-1", datetime.now(UTC)]],
        column_names=["person_hash", "request_id", "requested_at"],
    )
    # ...and this sink's insert of the batch read before lands afterwards.
    clickhouse.insert(EVENTS.table, rows, column_names=list(EVENTS.columns))
    await sink._erase_late({ANA, BEN})
    assert (rows_about(clickhouse, ANA), rows_about(clickhouse, BEN)) == (0, 1)
    assert sink.stats.erased_after_insert == 1
    await sink._erase_late({BEN})  # nothing new: no more work
    assert sink.stats.erased_after_insert == 1
