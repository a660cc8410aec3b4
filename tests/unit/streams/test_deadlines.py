from streams.timers import DeadlineIndex, stored_deadline
from tests.unit.factories import Feed, added, at, days, identify, shipped_rules, track


def test_due_keys_come_out_soonest_first_per_partition_once() -> None:
    index = DeadlineIndex()
    index.set(b"a", at(10), 0)
    index.set(b"b", at(5), 0)
    index.set(b"c", at(1), 1)
    assert index.pop_due(0, at(7)) == [b"b"]
    assert index.pop_due(0, at(7)) == []
    assert index.pop_due(0, at(10)) == [b"a"]
    assert index.pop_due(1, at(100)) == [b"c"]
    assert len(index) == 0


def test_a_moved_or_cleared_deadline_replaces_the_old_one() -> None:
    index = DeadlineIndex()
    index.set(b"a", at(1), 0)
    index.set(b"a", at(20), 0)  # the person's deadline moved later
    index.set(b"b", at(2), 0)
    index.set(b"b", None, 0)  # and this one has nothing pending any more
    assert index.pop_due(0, at(10)) == []
    assert index.pop_due(0, at(20)) == [b"a"]


def test_a_stored_state_gives_the_deadline_the_state_itself_gives() -> None:
    feed = Feed(shipped_rules())
    assert stored_deadline(feed.state.to_json()) is None
    feed.event(identify(0, email="p1@example.com"))
    feed.event(added(1))
    feed.event(track("Product Viewed", 2, product_id="sku-2"))
    stored = feed.state.to_json()
    assert feed.state.pending  # the cart and the browse reminders wait
    assert stored_deadline(stored) == feed.state.next_deadline()
    feed.tick(days(2))  # everything has fired; only segment checks may remain
    stored = feed.state.to_json()
    assert stored_deadline(stored) == feed.state.next_deadline()


def test_the_earliest_deadline_skips_moved_and_cleared_ones_and_other_partitions() -> None:
    index = DeadlineIndex()
    index.set(b"a", at(1), 0)
    index.set(b"a", at(30), 0)  # moved later: its old entry is stale
    index.set(b"b", at(2), 0)
    index.set(b"b", None, 0)
    index.set(b"c", at(5), 1)
    assert index.earliest({0}) == at(30)
    assert index.earliest({0, 1}) == at(5)
    assert index.earliest({2}) is None
