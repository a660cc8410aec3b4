from datetime import timedelta

from streams.timers import PartitionClock
from tests.unit.factories import at


class FakeWall:
    def __init__(self, minutes: float) -> None:
        self.minutes = minutes

    def __call__(self):  # type: ignore[no-untyped-def]
        return at(self.minutes)


def test_unknown_partition_waits_for_its_backlog_then_follows_the_wall_clock():
    wall = FakeWall(100)
    clock = PartitionClock(wall=wall, idle_after=timedelta(seconds=30))
    assert clock.now(0) is None
    wall.minutes = 101
    assert clock.now(0) == at(101)


def test_partition_with_backlog_follows_event_time():
    wall = FakeWall(1000)
    clock = PartitionClock(wall=wall, idle_after=timedelta(seconds=30))
    clock.observe(2, at(10), caught_up=False)
    clock.observe(2, at(5), caught_up=False)  # a late event never moves stream time back
    assert clock.now(2) == at(10)


def test_caught_up_or_idle_partition_follows_the_wall_clock():
    wall = FakeWall(1000)
    clock = PartitionClock(wall=wall, idle_after=timedelta(seconds=30))
    clock.observe(1, at(999), caught_up=True)
    assert clock.now(1) == at(1000)
    clock.observe(3, at(10), caught_up=False)
    wall.minutes = 1001  # a minute without messages: the backlog is gone
    assert clock.now(3) == at(1001)


def test_event_time_from_a_clock_running_ahead_is_bounded():
    wall = FakeWall(100)
    clock = PartitionClock(wall=wall, idle_after=timedelta(seconds=30), future_tolerance=timedelta(seconds=5))
    clock.observe(0, at(500), caught_up=False)
    assert clock.now(0) == at(100) + timedelta(seconds=5)
