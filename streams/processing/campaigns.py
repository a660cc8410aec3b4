"""Campaigns in a runner: the control topic read whole (streams/processing/whole_topic.py), the campaigns it
names kept within a bound (CampaignRegistry), and the sweep that gives the people of the runner's partitions
their deadlines a chunk at a time (Sweep), so scheduling for a million people never stalls event processing.

The core decides everything about a person (streams/rules/campaigns.py); this only moves campaigns to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from schemas.campaigns import CampaignControl, CampaignOp, InvalidCampaign
from schemas.rules import RulesConfig
from streams.rules.campaigns import NO_CAMPAIGNS, CampaignPlan, Campaigns, plan, throttle_holds
from streams.rules.engine import schedule_campaigns
from streams.rules.person import PersonState

if TYPE_CHECKING:
    from streams.processing.processor import Processor

log = logging.getLogger(__name__)

# Every live campaign is looked at for every event of every person: the bound keeps that cost small.
MOST_LIVE_CAMPAIGNS = 200
# Cancelled campaigns are kept so their waiting deadlines are suppressed with the reason; the oldest
# cancelled one is forgotten first (its deadlines are then dropped without a suppression).
MOST_CANCELLED_CAMPAIGNS = 1000

# How long the sweep may run per turn of a runner's loop: events wait at most about this long for it.
SWEEP_BUDGET_SECONDS = 0.05
# The clock is read once per this many people (time.monotonic costs as much as a dict lookup or two).
SWEEP_CLOCK_EVERY = 32


class CampaignRegistry:
    """The latest control message of each campaign, by rule name (`campaign:<id>`), within the bounds."""

    def __init__(
        self, rules: RulesConfig, most_live: int = MOST_LIVE_CAMPAIGNS, most_cancelled: int = MOST_CANCELLED_CAMPAIGNS
    ) -> None:
        self.rules = rules
        self.most_live = most_live
        self.most_cancelled = most_cancelled
        self._plans: dict[str, CampaignPlan] = {}  # in arrival order: the oldest cancelled goes first
        self._intervals: dict[str, timedelta] = {}
        self._campaigns = NO_CAMPAIGNS

    @property
    def plans(self) -> Mapping[str, CampaignPlan]:
        return self._plans

    @property
    def campaigns(self) -> Campaigns:
        """What the core is told when no throttle holds anyone (the same object until something changes)."""
        return self._campaigns

    def live(self) -> int:
        return sum(1 for each in self._plans.values() if not each.cancelled)

    def throttle_intervals(self, partitions: int) -> Mapping[str, timedelta]:
        """Rule name -> time between two messages of one partition: each partition takes its share of the
        campaign's messages per minute, so all runners together stay within it."""
        if not self._intervals:
            return self._intervals
        return {name: interval * partitions for name, interval in self._intervals.items()}

    def apply(self, message: CampaignControl) -> bool:
        """Take one control message; True when a campaign became live or changed (the sweep starts again).
        Raises InvalidCampaign with the reason for its dead letter."""
        name = f"campaign:{message.campaign_id}"
        known = self._plans.get(name)
        if message.op == CampaignOp.CANCEL.value:
            campaign = known.campaign if known is not None else message.campaign
            if campaign is None:
                raise InvalidCampaign(f"cancels campaign {message.campaign_id!r}, which was never scheduled")
            self._put(name, plan(campaign, cancelled=True))
            self._forget_oldest_cancelled()
            return False
        assert message.campaign is not None  # the message's own validation
        campaign = message.campaign
        if known is not None and not known.cancelled and known.campaign == campaign:
            return False  # read again (a restart, another partition's copy)
        if unknown := campaign.unknown_segments(self.rules):
            raise InvalidCampaign(f"audience names unknown segments: {', '.join(unknown)}")
        if (known is None or known.cancelled) and self.live() >= self.most_live:
            raise InvalidCampaign(f"over a limit: {self.most_live} live campaigns; cancel one first")
        self._put(name, plan(campaign))
        return True

    def _put(self, name: str, each: CampaignPlan) -> None:
        self._plans.pop(name, None)
        self._plans[name] = each
        per_minute = each.campaign.throttle_per_minute
        if per_minute is None or each.cancelled:
            self._intervals.pop(name, None)
        else:
            self._intervals[name] = timedelta(minutes=1) / per_minute
        self._campaigns = Campaigns(self._plans)

    def _forget_oldest_cancelled(self) -> None:
        cancelled = [name for name, each in self._plans.items() if each.cancelled]
        for name in cancelled[: max(0, len(cancelled) - self.most_cancelled)]:
            del self._plans[name]
        self._campaigns = Campaigns(self._plans)


class Throttle:
    """Each partition's next free slot per throttled campaign. In memory only: a restarted runner starts its
    slots afresh, so right after a restart a partition may send up to one interval's worth early."""

    def __init__(self) -> None:
        self._next_free: dict[int, dict[str, datetime]] = {}

    def campaigns_for(
        self, registry: CampaignRegistry, partitions: int, partition: int, state: PersonState, now: datetime
    ) -> Campaigns:
        intervals = registry.throttle_intervals(partitions)
        if not intervals or not state.pending:
            return registry.campaigns
        slots = self._next_free.setdefault(partition, {})
        held = throttle_holds(state, now, registry.plans, intervals, slots)
        return Campaigns(registry.plans, held) if held else registry.campaigns

    def forget(self, partitions: set[int]) -> None:
        for partition in partitions:
            self._next_free.pop(partition, None)


class Sweep:
    """Gives every person of the partitions it is told of a deadline for each live campaign, a chunk per turn.

    It starts again from the beginning whenever a campaign becomes live and whenever partitions are assigned
    (the people moved, and the previous owner may not have reached them); someone who already waits for a
    campaign, or had it, is left as they are, so going over people twice changes nothing."""

    def __init__(self) -> None:
        self._todo: dict[int, Iterator[PersonState] | None] = {}
        self.swept = 0  # people looked at, since the start (for the metrics and the tests)

    def restart(self, partitions: set[int]) -> None:
        self._todo = dict.fromkeys(sorted(partitions))

    def stop(self) -> None:
        self._todo = {}

    @property
    def partitions(self) -> set[int]:
        """Partitions with people still to look at."""
        return set(self._todo)

    @property
    def busy(self) -> bool:
        return bool(self._todo)

    def run(self, processor: Processor, budget_seconds: float, partitions: set[int] | None = None) -> bool:
        """Look at people for about `budget_seconds` (of `partitions` only, when given: a Faust agent writes
        only the partitions of the batch in hand); True while people are left."""
        registry = processor.campaigns
        if not registry.live():
            self._todo = {}
            return False
        until = time.monotonic() + budget_seconds
        for partition in list(self._todo):
            if partitions is not None and partition not in partitions:
                continue
            if partition not in processor.owned:
                del self._todo[partition]
                continue
            if self._partition(processor, partition, until):
                del self._todo[partition]
            if time.monotonic() >= until:
                break
        return self.busy

    def _partition(self, processor: Processor, partition: int, until: float) -> bool:
        """Sweep one partition until `until`; True once all its people were looked at."""
        now = processor.clock.now(partition)
        if now is None:
            return False  # the partition's time is not known yet: a backlog may be on its way
        people = self._todo[partition]
        if people is None:
            people = self._todo[partition] = self._people(processor, partition)
        count = 0
        try:
            for state in people:
                self._schedule(processor, partition, state, now)
                count += 1
                if count % SWEEP_CLOCK_EVERY == 0 and time.monotonic() >= until:
                    return False
        except RuntimeError:
            # An in-memory table changed under the iterator (a checkpoint wrote it): look again from the start,
            # which skips whoever was given their deadline already.
            self._todo[partition] = None
            return False
        return True

    def _people(self, processor: Processor, partition: int) -> Iterator[PersonState]:
        """The partition's people, the stored ones and then those changed since the last checkpoint and not
        stored yet (new ones among them), lazily: both parts are taken a turn's budget at a time."""
        store = processor.store
        for key, stored in store.stored_items(partition):
            self.swept += 1
            if store.holds(key):
                state = store.get(partition, key)  # the latest, changed since it was stored
            else:
                try:
                    # Not through the store's cache: a sweep of every person would push the busy ones out of it.
                    state = PersonState.from_json(stored)
                except ValueError:
                    continue  # unreadable: the person's next message quarantines it
            if state is not None:
                yield state
        yield from list(store.unstored(partition))

    @staticmethod
    def _schedule(processor: Processor, partition: int, state: PersonState, now: datetime) -> None:
        campaigns = processor.campaigns.campaigns
        updated = schedule_campaigns(state, now, campaigns, processor.rules, processor.settings.limits)
        if updated is not state:
            processor.save(updated, partition)
