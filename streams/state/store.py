"""The batched runner's store of people's states: decoded states in memory in front of the tables.

Decoding a stored state costs more than applying an event to it, so the states of the people touched
lately stay decoded. A changed state waits in memory ("unstored") until the runner's next checkpoint
encodes and writes it once, however many batches changed it (streams/state/checkpoint.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson

from schemas.settings import Settings
from streams.processing.types import UnreadableState
from streams.rules.person import PersonState
from streams.state.tables import Table

# Decoded states of the people this runner touched lately.
CACHED_STATES = 50_000


def decode_cached(cache: dict[bytes, PersonState], key: bytes, stored: bytes) -> PersonState:
    """A stored state decoded and kept in `cache` (at most CACHED_STATES of them); UnreadableState when it
    does not decode. Both runners' stores read through here."""
    try:
        state = PersonState.from_json(stored)
    except ValueError as error:
        raise UnreadableState(stored, error) from None
    if len(cache) >= CACHED_STATES:
        cache.clear()  # crude, and cheap: the hot people come back within a batch or two
    cache[key] = state
    return state


class TableStore:
    """A PersonStore over the persons and erased tables, with decoded states cached."""

    def __init__(self, settings: Settings) -> None:
        directory: Path | None = settings.data_dir / "worker" / settings.app_id
        if settings.table_store != "rocksdb":
            directory = None
        self.persons = Table("persons", settings.changelog_topic("persons"), directory and directory / "persons")
        # keyed hash of each erased person -> when: late events for them are dropped, nothing else is kept.
        self.erased = Table("erased", settings.changelog_topic("erased"), directory and directory / "erased")
        self._cache: dict[bytes, PersonState] = {}
        self._unstored: dict[bytes, tuple[int, PersonState]] = {}  # key -> (partition, state)

    @property
    def tables(self) -> list[Table]:
        return [self.persons, self.erased]

    # PersonStore ---------------------------------------------------------------------------------------------

    def get(self, partition: int, key: bytes) -> PersonState | None:
        unstored = self._unstored.get(key)
        if unstored is not None:
            return unstored[1]
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        stored = self.persons.get(partition, key)
        return None if stored is None else decode_cached(self._cache, key, stored)

    def holds(self, key: bytes) -> bool:
        return key in self._unstored or key in self._cache

    def save(self, partition: int, state: PersonState) -> None:
        key = state.person_id.encode()
        self._cache[key] = state
        self._unstored[key] = (partition, state)

    def delete(self, partition: int, key: bytes) -> None:
        self._cache.pop(key, None)
        self._unstored.pop(key, None)
        self.persons.put(partition, key, None)

    def is_erased(self, partition: int, hashed: bytes) -> bool:
        return self.erased.get(partition, hashed) is not None

    def mark_erased(self, partition: int, hashed: bytes, at: bytes) -> None:
        self.erased.put(partition, hashed, at)

    def stored_items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        return self.persons.items(partition)

    def unstored(self, partition: int) -> Iterator[PersonState]:
        return (state for held, state in self._unstored.values() if held == partition)

    # For the runner ------------------------------------------------------------------------------------------

    def take_unstored(self) -> dict[bytes, tuple[int, PersonState]]:
        """The changed states since the last call, for the checkpoint to encode and write."""
        unstored, self._unstored = self._unstored, {}
        return unstored

    def unstored_count(self) -> int:
        return len(self._unstored)

    def forget_decoded(self, key: bytes | None = None) -> None:
        """Drop one person's decoded state (or all): the next read decodes what is stored."""
        if key is None:
            self._cache.clear()
        else:
            self._cache.pop(key, None)

    def discard_unstored(self) -> None:
        """Forget every change not yet stored (a failed batch is replayed from the committed offsets)."""
        self._cache.clear()
        self._unstored.clear()
        for table in self.tables:
            table.discard_staged()

    def segment_members(self, name: str, partitions: set[int]) -> list[str]:
        """Members among the people of these partitions, changes not yet stored included."""
        members = {
            key
            for partition in sorted(partitions)
            for key, stored in self.persons.items(partition)
            if key not in self._unstored and name in orjson.loads(stored).get("segments", {})
        }
        members.update(key for key, (_, state) in self._unstored.items() if name in state.segments)
        return [key.decode() for key in members]
