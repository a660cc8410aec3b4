"""The pure parts of `nudgeflow replay`: which lines become which messages, under which key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from streams.replay import (
    Invalid,
    Keep,
    Skip,
    Source,
    Tally,
    TimeRange,
    decide,
    file_line,
    parse_moment,
    parse_source,
    progress_line,
)

NOON = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def line(moment: datetime, **identity: str) -> bytes:
    return orjson.dumps(
        {"type": "track", "event": "Signed Up", "timestamp": moment.isoformat(), "properties": {}, **identity}
    )


def test_events_in_the_range_are_kept_as_they_were_read_keyed_by_the_person() -> None:
    window = TimeRange(NOON, NOON + timedelta(hours=1))
    raw = line(NOON, userId="ana", anonymousId="a-1")
    assert decide(raw, "line 1", window) == Keep(b"ana", raw)
    anonymous = line(NOON + timedelta(minutes=59), anonymousId="a-2")
    assert decide(anonymous, "line 2", window) == Keep(b"a-2", anonymous)


def test_the_range_includes_since_and_excludes_until() -> None:
    window = TimeRange(NOON, NOON + timedelta(hours=1))
    assert decide(line(NOON - timedelta(milliseconds=1), userId="ana"), "line 1", window) == Skip()
    assert decide(line(NOON + timedelta(hours=1), userId="ana"), "line 1", window) == Skip()
    assert isinstance(decide(line(NOON, userId="ana"), "line 1", window), Keep)


def test_open_ends_keep_everything_on_that_side() -> None:
    assert isinstance(decide(line(datetime(2001, 1, 1, tzinfo=UTC), userId="a"), "x", TimeRange()), Keep)
    assert isinstance(decide(line(NOON, userId="a"), "x", TimeRange(since=NOON)), Keep)
    assert decide(line(NOON, userId="a"), "x", TimeRange(until=NOON)) == Skip()


def test_an_event_timestamp_in_another_zone_is_compared_as_the_same_instant() -> None:
    paris = NOON.astimezone(timezone(timedelta(hours=1)))
    assert isinstance(decide(line(paris, userId="a"), "x", TimeRange(NOON, NOON + timedelta(seconds=1))), Keep)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object but list"),
        (line(NOON), "an event needs userId or anonymousId"),
        (b'{"type": "track", "userId": "a", "timestamp": "2026-11-02T12:00:00Z"}', "a track event needs an event name"),
    ],
)
def test_invalid_lines_carry_where_they_were_and_the_parser_s_reason(raw: bytes, reason: str) -> None:
    decision = decide(raw, "line 7", TimeRange())
    assert isinstance(decision, Invalid)
    assert decision.where == "line 7"
    assert reason in decision.reason


def test_blank_lines_are_not_events_and_not_errors() -> None:
    assert file_line(b"   \n") is None
    assert file_line(b'{"a": 1}\r\n') == b'{"a": 1}'


def test_sources_and_moments_from_the_command_line() -> None:
    assert parse_source("topic:old.events") == Source(topic="old.events")
    assert parse_source("events.jsonl") == Source(path="events.jsonl")
    with pytest.raises(ValueError, match="topic name"):
        parse_source("topic:")
    assert parse_moment("2026-11-02T12:00:00") == NOON
    assert parse_moment("2026-11-02T13:00:00+01:00") == NOON


def test_the_tally_counts_each_outcome_and_the_summary_says_so() -> None:
    tally = Tally()
    for decision in (Keep(b"a", b"{}"), Skip(), Invalid("line 3", "not JSON"), Keep(b"b", b"{}")):
        tally.count(decision)
    assert (tally.read, tally.produced, tally.skipped, tally.invalid) == (4, 2, 1, 1)
    assert tally.problems == [Invalid("line 3", "not JSON")]
    summary = tally.summary(2.0, "events")
    assert "produced 2 to events" in summary and "invalid 1" in summary and "(2/s)" in summary


def test_the_progress_line_redraws_in_place_with_thousands_separators() -> None:
    assert progress_line(12_345, 100_000, 2.5) == "\r  12,345 / 100,000 events  (4,938/s)"
    assert progress_line(5, None, 0.0) == "\r  5 events  (0/s)"
