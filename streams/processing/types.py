"""The interfaces between the processor and the runner hosting it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from streams.rules.person import PersonState

if TYPE_CHECKING:  # the processor imports this module
    from streams.processing.processor import Processor
    from streams.timers import DeadlineIndex


class SourceRecord(Protocol):
    """One record of a source topic, as aiokafka's ConsumerRecord and Faust's Message both carry it."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class UnreadableState(ValueError):
    """A stored state that does not decode; carries the stored bytes so they can be set aside."""

    def __init__(self, stored: bytes, error: Exception) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.stored = stored


class PersonStore(Protocol):
    """Where a runner keeps people's states: the latest one of each person, stored or not yet."""

    def get(self, partition: int, key: bytes) -> PersonState | None:
        """The person's latest state, or None for nobody; raises UnreadableState for a stored state that
        cannot be decoded."""
        ...

    def holds(self, key: bytes) -> bool:
        """Whether the person's state is in memory (a person held passed the erased check already)."""
        ...

    def save(self, partition: int, state: PersonState) -> None: ...

    def delete(self, partition: int, key: bytes) -> None: ...

    def is_erased(self, partition: int, hashed: bytes) -> bool: ...

    def mark_erased(self, partition: int, hashed: bytes, at: bytes) -> None: ...

    def stored_items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every stored state of a partition in its stored form (for sweeps and schedule rebuilds)."""
        ...

    def unstored(self, partition: int) -> Iterator[PersonState]:
        """The states of a partition changed since they were last stored."""
        ...


class Output(Protocol):
    """Where the processor's records go; the runner sends them and waits for the broker."""

    def add(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None: ...


class Hosting:
    """What a runner answers about the processor it hosts: the partitions it owns and their deadlines (the
    worker's HTTP pages read these under either runner)."""

    processor: Processor

    @property
    def owned(self) -> set[int]:
        return self.processor.owned

    @property
    def schedule(self) -> DeadlineIndex:
        return self.processor.schedule
