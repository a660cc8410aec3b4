"""Tables: key-value state per partition, kept durable by a compacted changelog topic.

A table belongs to the worker that owns the matching partition of the source topics. Writes are staged
while a batch is processed and leave in one go at its end: one changelog record per key per batch, and
the local store is only updated once the broker has acknowledged them. The changelog is the truth: on
assignment, a partition's store catches up from the changelog offset it last recorded (all of it for an
in-memory store, see streams/state/recovery.py), so a worker that died at any moment comes back with
exactly what the broker holds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from rocksdict import Rdict

from streams.broker.outbox import Outbox

log = logging.getLogger(__name__)

OFFSETS_FILE = "changelog-offsets.json"


class Table:
    """One table: key-value state per partition, durable through its changelog topic."""

    def __init__(self, name: str, changelog_topic: str, directory: Path | None) -> None:
        """`directory` None keeps every partition in memory; otherwise one RocksDB store per partition."""
        self.name = name
        self.changelog_topic = changelog_topic
        self.directory = directory
        self._stores: dict[int, MutableMapping[bytes, bytes]] = {}
        self._staged: dict[int, dict[bytes, bytes | None]] = {}
        # Writes sent to the changelog and not yet acknowledged: a read meanwhile (the HTTP API does not wait
        # for the checkpoint) must see them, not what the store held before, or it caches a stale state.
        self._sending: dict[int, dict[bytes, bytes | None]] = {}
        # The changelog offset each partition's store reflects; written to disk on every assignment, revocation
        # and shutdown (after a crash the store reads a little more of the changelog, which is harmless).
        self._applied: dict[int, int] = {}

    # Reading ----------------------------------------------------------------------------------------

    @property
    def partitions(self) -> set[int]:
        return set(self._stores)

    def get(self, partition: int, key: bytes) -> bytes | None:
        for pending in (self._staged, self._sending):
            writes = pending.get(partition)
            if writes is not None and key in writes:
                return writes[key]
        store = self._stores.get(partition)
        if store is None:
            raise KeyError(f"table {self.name}: partition {partition} is not held by this worker")
        return store.get(key)

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Items of one partition as `get` sees them: staged writes included."""
        staged = {**self._sending.get(partition, {}), **self._staged.get(partition, {})}
        for key, value in self._stores[partition].items():
            if key not in staged:
                yield key, value
        for key, staged_value in staged.items():
            if staged_value is not None:
                yield key, staged_value

    def __len__(self) -> int:
        # keys(): a RocksDB store cannot be iterated directly.
        return sum(sum(1 for _ in store.keys()) for store in self._stores.values())  # noqa: SIM118

    # Writing ----------------------------------------------------------------------------------------

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Stage a write (None deletes); it reaches the changelog and the store at the next `flush`."""
        if partition not in self._stores:
            raise KeyError(f"table {self.name}: partition {partition} is not held by this worker")
        self._staged.setdefault(partition, {})[key] = value

    def _queue_staged(self, outbox: Outbox) -> dict[int, dict[bytes, bytes | None]]:
        staged, self._staged = self._staged, {}
        self._sending = staged
        for partition, writes in staged.items():
            for key, value in writes.items():
                outbox.add(self.changelog_topic, key, value, partition)
        return staged

    def _apply(self, staged: dict[int, dict[bytes, bytes | None]], offsets: dict[tuple[str, int], int]) -> None:
        self._sending = {}
        for partition, writes in staged.items():
            store = self._stores.get(partition)
            if store is None:
                continue  # revoked meanwhile: the next owner reads it from the changelog
            for key, value in writes.items():
                if value is None:
                    if key in store:
                        del store[key]
                else:
                    store[key] = value
            # The first offset of the last record batch: never past what the store holds, so a restart
            # may re-read a few records, which is harmless, and never skips one.
            written = offsets.get((self.changelog_topic, partition))
            if written is not None:
                self._applied[partition] = max(self._applied.get(partition, -1), written)

    def discard_staged(self) -> None:
        self._staged.clear()
        self._sending = {}

    # Ownership ---------------------------------------------------------------------------------------

    def open(self, partitions: set[int]) -> list[int]:
        """Open the stores of newly assigned partitions, each at the changelog offset it last recorded
        (none for an in-memory store); returns the partitions opened. `streams.state.recovery` then
        brings them up to the end of the changelog."""
        new = sorted(partitions - set(self._stores))
        for partition in new:
            self._stores[partition] = self._open(partition)
            self._applied[partition] = self._recorded_offsets().get(partition, -1) if self.directory else -1
        return new

    def next_changelog_offset(self, partition: int) -> int:
        return self._applied[partition] + 1

    def restore(self, partition: int, key: bytes, value: bytes | None, offset: int) -> None:
        """One changelog record read back into the partition's store."""
        store = self._stores[partition]
        if value is None:
            if key in store:
                del store[key]
        else:
            store[key] = value
        self._applied[partition] = offset

    def revoke(self, partitions: set[int]) -> None:
        self.record_offsets()
        for partition in partitions:
            store = self._stores.pop(partition, None)
            self._staged.pop(partition, None)
            self._sending.pop(partition, None)
            if isinstance(store, Rdict):
                store.close()

    def close(self) -> None:
        self.revoke(set(self._stores))

    def record_offsets(self) -> None:
        """Write down how far each local store has applied its changelog."""
        if self.directory is None:
            return
        recorded = {**self._recorded_offsets(), **{p: self._applied[p] for p in self._stores}}
        for store in self._stores.values():
            if isinstance(store, Rdict):
                store.flush()  # the offsets must never run ahead of what the store has on disk
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.directory / f"{OFFSETS_FILE}.tmp"
        temporary.write_bytes(orjson.dumps({str(p): offset for p, offset in recorded.items()}))
        temporary.replace(self.directory / OFFSETS_FILE)

    def _recorded_offsets(self) -> dict[int, int]:
        assert self.directory is not None
        path = self.directory / OFFSETS_FILE
        if not path.exists():
            return {}
        return {int(p): int(offset) for p, offset in orjson.loads(path.read_bytes()).items()}

    def _open(self, partition: int) -> MutableMapping[bytes, bytes]:
        if self.directory is None:
            return {}
        self.directory.mkdir(parents=True, exist_ok=True)
        store: Any = Rdict(str(self.directory / f"partition-{partition}.rocksdb"))
        return store  # type: ignore[no-any-return]


async def flush(tables: Sequence[Table], outbox: Outbox) -> None:
    """Send the tables' staged writes to their changelogs in one go, wait for the broker, then apply them
    to the local stores. `outbox` must hold nothing else: all of it is sent."""
    staged = [(table, table._queue_staged(outbox)) for table in tables]
    written = await outbox.send()
    offsets = {(topic, partition): offset for topic, partition, offset in written}
    for table, writes in staged:
        table._apply(writes, offsets)
