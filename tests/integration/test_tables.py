"""Tables against the real broker: what a flush wrote comes back from the changelog, in memory or on disk."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from schemas.settings import Settings
from streams.broker.outbox import Outbox
from streams.rules.person import PersonState
from streams.state import checkpoint, recovery
from streams.state.store import TableStore
from streams.state.tables import Table, flush

pytestmark = pytest.mark.integration


async def write(settings: Settings, table: Table, writes: dict[bytes, bytes | None], partition: int = 1) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in writes.items():
            table.put(partition, key, value)
        await flush([table], Outbox(producer))
    finally:
        await producer.stop()


async def test_a_fresh_worker_gets_back_exactly_the_flushed_state(settings: Settings) -> None:
    topic = settings.changelog_topic("persons")
    first = Table("persons", topic, None)
    await recovery.assign(first, {1, 2}, settings)
    await write(settings, first, {b"ann": b"1", b"bob": b"1"})
    await write(settings, first, {b"ann": b"2", b"bob": None})  # one record per key per flush; a tombstone
    assert first.get(1, b"ann") == b"2"
    assert first.get(1, b"bob") is None

    second = Table("persons", topic, None)  # another worker, nothing on disk
    await recovery.assign(second, {1, 2}, settings)
    assert dict(second.items(1)) == {b"ann": b"2"}
    assert dict(second.items(2)) == {}


async def test_staged_writes_are_seen_at_once_and_gone_if_discarded(settings: Settings) -> None:
    table = Table("persons", settings.changelog_topic("persons"), None)
    await recovery.assign(table, {1}, settings)
    table.put(1, b"ann", b"staged")
    assert table.get(1, b"ann") == b"staged"
    assert dict(table.items(1)) == {b"ann": b"staged"}
    table.discard_staged()  # a batch the broker never acknowledged
    assert table.get(1, b"ann") is None
    assert dict(table.items(1)) == {}
    with pytest.raises(KeyError, match="partition 3 is not held"):
        table.put(3, b"cy", b"1")


async def test_a_store_on_disk_catches_up_from_where_it_stopped(settings: Settings, tmp_path: Path) -> None:
    topic = settings.changelog_topic("persons")
    directory = tmp_path / "persons"
    table = Table("persons", topic, directory)
    await recovery.assign(table, {1}, settings)
    await write(settings, table, {b"ann": b"1"})
    table.close()  # the partition moves away; its store stays on disk with the offset it reached

    elsewhere = Table("persons", topic, None)  # the partition's next owner writes on
    await recovery.assign(elsewhere, {1}, settings)
    await write(settings, elsewhere, {b"ann": b"2", b"cy": b"1"})

    back = Table("persons", topic, directory)  # and the partition comes back
    await recovery.assign(back, {1}, settings)
    assert dict(back.items(1)) == {b"ann": b"2", b"cy": b"1"}
    back.close()


async def test_a_read_while_a_checkpoint_is_in_flight_sees_the_writes_being_sent(settings: Settings) -> None:
    # The HTTP API reads states without waiting for the runner's checkpoint. Between sending a batch's writes
    # and the broker's acknowledgement, it must see them, not the store's older value: a person just erased
    # read back then was cached again and answered 200 for good.
    store = TableStore(settings.model_copy(update={"table_store": "memory"}))
    await recovery.assign(store.persons, {1}, settings)
    await recovery.assign(store.erased, {1}, settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    outbox = Outbox(producer)
    try:
        store.save(1, PersonState.new("zoe"))
        await checkpoint.store_states(store, outbox, quarantine=lambda *_: None)
        store.forget_decoded()
        store.delete(1, b"zoe")
        in_flight = asyncio.create_task(checkpoint.store_states(store, outbox, quarantine=lambda *_: None))
        await asyncio.sleep(0)  # the checkpoint has queued its writes and waits for the broker
        assert not in_flight.done()
        assert store.get(1, b"zoe") is None
        await in_flight
        assert store.get(1, b"zoe") is None
    finally:
        await producer.stop()
