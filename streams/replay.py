"""Replay and backfill: the pure parts of `nudgeflow replay` (reading lines, choosing events, keying them,
showing progress). The command itself only moves bytes between a file or topic and the events topic.

Events are produced as they were read, byte for byte: re-serialising would drop fields a newer worker
understands. Parsing is only to decide whether, when and under which key an event goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from schemas.events import Event, InvalidEvent, parse_event

TOPIC_PREFIX = "topic:"


@dataclass(frozen=True)
class TimeRange:
    """[since, until) on the event's own timestamp; an open end is None."""

    since: datetime | None = None
    until: datetime | None = None

    def __contains__(self, moment: datetime) -> bool:
        return (self.since is None or moment >= self.since) and (self.until is None or moment < self.until)


def parse_moment(text: str) -> datetime:
    """An ISO time from the command line; without a zone it is UTC, as event timestamps are."""
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class Source:
    """Where the events come from: a JSON-lines file, or an existing Kafka topic."""

    path: str | None = None
    topic: str | None = None


def parse_source(text: str) -> Source:
    """Where `replay` reads: `topic:NAME` for a topic, anything else a file."""
    if text.startswith(TOPIC_PREFIX):
        topic = text.removeprefix(TOPIC_PREFIX)
        if not topic:
            raise ValueError("topic: needs a topic name, e.g. topic:events")
        return Source(topic=topic)
    return Source(path=text)


def person_key(event: Event) -> bytes:
    """The events topic is keyed by person: the known user, else the anonymous visitor."""
    return (event.user_id or event.anonymous_id or "").encode()


@dataclass(frozen=True)
class Keep:
    """An event to produce, with the key of its person."""

    key: bytes
    value: bytes


@dataclass(frozen=True)
class Skip:
    """An event outside the time range: read, valid, not produced."""


@dataclass(frozen=True)
class Invalid:
    """A line or record that is not a valid event, and why."""

    where: str  # "line 12" of a file, "events[3]@1041" of a topic
    reason: str


Decision = Keep | Skip | Invalid


def decide(raw: bytes, where: str, window: TimeRange) -> Decision:
    """What to do with one line or message."""
    try:
        event = parse_event(raw)
    except InvalidEvent as error:
        return Invalid(where, str(error))
    if event.timestamp not in window:
        return Skip()
    return Keep(person_key(event), raw)


def file_line(line: bytes) -> bytes | None:
    """A line of a JSON-lines file as an event's bytes; None for a blank line, which is not an error."""
    stripped = line.strip()
    return stripped or None


@dataclass
class Tally:
    """What a replay has read, produced, skipped and found invalid."""

    read: int = 0
    produced: int = 0
    skipped: int = 0
    invalid: int = 0
    problems: list[Invalid] = field(default_factory=list)

    def count(self, decision: Decision) -> None:
        self.read += 1
        if isinstance(decision, Keep):
            self.produced += 1
        elif isinstance(decision, Skip):
            self.skipped += 1
        else:
            self.invalid += 1
            self.problems.append(decision)

    def summary(self, seconds: float, destination: str) -> str:
        rate = self.read / seconds if seconds > 0 else 0.0
        return (
            f"replay: read {self.read:,}, produced {self.produced:,} to {destination}, "
            f"outside the time range {self.skipped:,}, invalid {self.invalid:,} in {seconds:.1f}s ({rate:,.0f}/s)"
        )


def progress_line(done: int, total: int | None, seconds: float) -> str:
    """The progress bar's text, redrawn in place with a carriage return."""
    rate = done / seconds if seconds > 0 else 0.0
    of = f" / {total:,}" if total is not None else ""
    return f"\r  {done:,}{of} events  ({rate:,.0f}/s)"
