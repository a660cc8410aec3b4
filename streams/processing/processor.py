"""The per-partition step every runner hosts: records and clock moments in, the pure core applied, what it
returns handed to the output, the changed states saved to the store.

Nothing here decides anything about a person; `streams.rules.engine` does. A failure is isolated to the
record or the person it concerns: a record that cannot be applied is dead-lettered with the reason, a
state that cannot be fired, read or published is quarantined with the reason (docs/architecture.md,
"Isolation of failure"), and the loop goes on.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta

import orjson
from msgspec.structs import replace

from schemas.campaigns import InvalidCampaign, parse_control
from schemas.encoding import encode
from schemas.events import InvalidEvent, parse_event
from schemas.identity import InvalidIdentityMessage, parse_identity
from schemas.limits import truncated
from schemas.privacy import InvalidPrivacyRequest, is_contact_id, parse_erasure, person_hash
from schemas.recommendations import InvalidRecommendation, parse_recommendation
from schemas.rules import RulesConfig
from schemas.scores import InvalidScore, parse_score
from schemas.settings import Settings
from schemas.triggers import DeadLetter, QuarantinedState
from streams.broker.outbox import partition_of
from streams.metrics import WorkerMetrics
from streams.processing import erasure, identity
from streams.processing.campaigns import CampaignRegistry, Sweep, Throttle
from streams.processing.recommendations import RecommendationMap
from streams.processing.types import Output, PersonStore, SourceRecord, UnreadableState
from streams.rules.campaigns import Campaigns
from streams.rules.consent import DoubleOptIn
from streams.rules.contacts import CONTACT_TRAITS, contact_changes
from streams.rules.engine import Outcome, Surroundings, absorb_score, advance_time, apply_event
from streams.rules.person import PersonState, SourcePosition
from streams.timers import DeadlineIndex, PartitionClock, stored_deadline, utc_now

log = logging.getLogger(__name__)

# A person whose deadline is still due after the clock reached it is looked at again after this long.
CHECK_RETRY_SECONDS = 5.0

# The clock's moments enter a person's applied offsets as microseconds: a moment already applied is skipped.
CLOCK_STREAM = "clock"


class Processor:
    """The step of one runner: records and clock moments applied to people's states, the results handed on."""

    def __init__(
        self,
        settings: Settings,
        rules: RulesConfig,
        store: PersonStore,
        output: Output,
        clock: PartitionClock | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.store = store
        self.output = output
        self.clock = clock or PartitionClock(idle_after=timedelta(seconds=settings.idle_after_seconds))
        self.metrics = metrics or WorkerMetrics()
        self.schedule = DeadlineIndex()
        self.owned: set[int] = set()  # partitions of the source topics (co-partitioned) the runner holds
        self.applied_events: Counter[tuple[str, str]] = Counter()  # (type, event name) -> count, since taken
        self._changed_profiles: dict[bytes, PersonState] = {}  # for the next profile snapshots
        self.campaigns = CampaignRegistry(rules)
        self.recommendations = RecommendationMap(settings.recommendation_products)
        self.sweep = Sweep()
        self._throttle = Throttle()
        self.opt_in = DoubleOptIn(
            email=settings.email_double_opt_in, link_valid_for=timedelta(hours=settings.double_opt_in_hours)
        )

    @property
    def source_topics(self) -> list[str]:
        settings = self.settings
        return [settings.events_topic, settings.identity_topic, settings.privacy_topic, settings.scores_topic]

    # Records -----------------------------------------------------------------------------------------------

    def handle(self, record: SourceRecord, caught_up: bool, received_at: datetime) -> None:
        """Apply one record of a source topic; `caught_up` says it was the last the broker had, and
        `received_at` is the wall clock an event's timestamp may not run far ahead of."""
        try:
            self._handle(record, caught_up, received_at)
        except Exception as error:  # one poisoned message must not stop the partition
            log.exception("processing %s/%d@%d failed", record.topic, record.partition, record.offset)
            self.dead_letter(record, f"processing failed: {type(error).__name__}: {error}")

    def _handle(self, record: SourceRecord, caught_up: bool, received_at: datetime) -> None:
        settings = self.settings
        position = SourcePosition(record.topic, record.partition, record.offset)
        if record.topic == settings.identity_topic:
            try:
                message = parse_identity(record.value, settings.limits)
            except InvalidIdentityMessage as error:
                self.dead_letter(record, str(error))
                return
            identity.handle(self, message, position)
            return
        if record.topic == settings.privacy_topic:
            try:
                request = parse_erasure(record.value, settings.limits)
            except InvalidPrivacyRequest as error:
                self.dead_letter(record, str(error))
                return
            erasure.handle(self, request, position)
            return
        if record.topic == settings.scores_topic:
            self._score(record, position, received_at)
            return
        try:
            event = parse_event(record.value, settings.limits, received_at=received_at)
        except InvalidEvent as error:
            self.dead_letter(record, str(error))
            return
        key = event.person_id.encode()
        if record.key != key:
            # Produced under another key: move it to the partition that owns the person.
            self.output.add(settings.events_topic, key, record.value)
            return
        # A person held in memory passed this check already, and erasing someone drops them from memory.
        if not self.store.holds(key) and self.is_erased(record.partition, event.person_id):
            self.metrics.dropped_erased.inc()
            return
        self.clock.observe(record.partition, event.timestamp, caught_up=caught_up)
        state = self.load(key, record.partition)
        forward_to = [state.merged_into] if state.merged_into is not None else state.contact_of
        if forward_to:
            # An anonymous id that now belongs to a known person, or an address or number that people have
            # (an SMS STOP naming only the sender): the message follows each of them.
            if not state.already_applied(position):
                self.save(replace(state, applied_offsets=state.record(position)), record.partition)
                self._forward(record.value or b"", forward_to, contact=bool(state.contact_of))
            return
        campaigns = self.campaigns_for(record.partition, state, event.timestamp)
        around = Surroundings(settings.limits, campaigns, self.opt_in, self.recommendations.view)
        step = apply_event(state, event, position, self.rules, around)
        if step.repeated:
            self.metrics.repeated.inc()
        if step.applied:
            self.applied_events[(event.type, event.event or event.name or "")] += 1
        self.publish(step, record.partition, before=state)

    def _score(self, record: SourceRecord, position: SourcePosition, received_at: datetime) -> None:
        """A record of the scores topic joined to the person's state (docs/architecture.md, "Predictions")."""
        try:
            score = parse_score(record.key, record.value, self.settings.limits)
        except InvalidScore as error:
            self.dead_letter(record, str(error))
            return
        key = record.key
        if not key:
            self.dead_letter(record, "a tombstone without a key")
            return
        person_id = key.decode(errors="replace")
        if not self.store.holds(key) and self.is_erased(record.partition, person_id):
            # Refused, not dead-lettered: a dead letter would be one more copy of an erased person's data. A
            # score published after the erasure's tombstone (a training run that read them before) would be
            # what compaction keeps, so another tombstone follows it.
            self.metrics.dropped_erased.inc()
            if score is not None:
                log.info("score of an erased person at %s/%d@%d refused", record.topic, record.partition, record.offset)
                self.output.add(self.settings.scores_topic, key, None)
            return
        state = self.latest_state(record.partition, key)
        if state is None and score is None:
            return  # nobody's scores to clear: a tombstone must not create a person
        state = state or PersonState.new(person_id)
        if state.merged_into is not None:
            # An anonymous id merged into someone: the scores speak of who it was, not of the person now.
            log.info("score of a merged id at %s/%d@%d dropped", record.topic, record.partition, record.offset)
            return
        now = self.clock.now(record.partition) or received_at
        around = Surroundings(
            self.settings.limits,
            self.campaigns_for(record.partition, state, now),
            self.opt_in,
            self.recommendations.view,
        )
        step = absorb_score(state, score, now, position, self.rules, around)
        self.publish(step, record.partition, before=state)

    def _forward(self, raw: bytes, people: list[str], contact: bool) -> None:
        document = orjson.loads(raw)
        if contact:
            # What a contact's message says of the address or number is the person's already (and may be
            # spelt otherwise): it must not rewrite their own.
            traits = document.get("traits")
            if isinstance(traits, dict):
                document["traits"] = {name: value for name, value in traits.items() if name not in CONTACT_TRAITS}
        for person_id in people:
            self.output.add(
                self.settings.events_topic, person_id.encode(), orjson.dumps({**document, "userId": person_id})
            )

    # Time ----------------------------------------------------------------------------------------------------

    def fire_due(self) -> None:
        """Let each partition's clock reach the people whose deadline it passed (docs/architecture.md,
        "Event time"). A person whose deadline cannot be fired is quarantined; the others still fire."""
        for partition in self.schedule.partitions():
            if partition not in self.owned:
                continue
            now = self.clock.now(partition)
            if now is None:
                continue
            self.fire_partition(partition, now)

    def fire_partition(self, partition: int, now: datetime) -> None:
        moment = SourcePosition(topic=CLOCK_STREAM, partition=partition, offset=microseconds(now))
        for key in self.schedule.pop_due(partition, now):
            try:
                state = self.load(key, partition)
                campaigns = self.campaigns_for(partition, state, now)
                around = Surroundings(self.settings.limits, campaigns, self.opt_in, self.recommendations.view)
                step = advance_time(state, now, moment, self.rules, around)
                self.publish(step, partition, before=state)
            except Exception as error:  # this person's deadline only
                self.quarantine(key, "timer", error, None)
                continue
            due = step.state.next_deadline()
            if due is not None and due <= now:  # not applied, or bounded work left: look again soon
                self.schedule.set(key, now + timedelta(seconds=CHECK_RETRY_SECONDS), partition)

    def rebuild_schedule(self) -> None:
        """The deadline index of the partitions now owned, from their stored states; the campaign sweep starts
        again over them too (people who moved here may not have been reached by their previous owner)."""
        self.schedule.clear()
        self.sweep.restart(self.owned)
        for partition in self.owned:
            for key, stored in self.store.stored_items(partition):
                try:
                    deadline = stored_deadline(stored)
                except (ValueError, TypeError, KeyError, AttributeError) as error:
                    # Unreadable: the person's next message quarantines it (load); no deadline meanwhile.
                    log.error("stored state of %r unreadable: %s", key[:64], error)
                    continue
                self.schedule.set(key, deadline, partition)

    # Campaigns and recommendations ---------------------------------------------------------------------------

    def control(self, record: SourceRecord) -> None:
        """One record of the campaigns topic: the registry updated, or a dead letter with the reason."""
        try:
            message = parse_control(record.value, record.key)
            if self.campaigns.apply(message):
                self.sweep.restart(self.owned)
                log.info("campaign %s scheduled; sweeping partitions %s", message.campaign_id, sorted(self.owned))
            else:
                log.info("campaign %s: %s", message.campaign_id, message.op)
        except InvalidCampaign as error:
            self.dead_letter(record, str(error))

    def recommendation(self, record: SourceRecord) -> None:
        """One record of the recommendations topic: the product's recommendations replaced or forgotten, or a
        dead letter with the reason (what the product had before stays)."""
        try:
            recommendation = parse_recommendation(record.key, record.value, self.settings.limits)
            assert record.key is not None  # parse_recommendation refuses a record without one
            self.recommendations.apply(record.key.decode(errors="replace"), recommendation)
        except InvalidRecommendation as error:
            self.dead_letter(record, str(error))

    def campaigns_for(self, partition: int, state: PersonState, now: datetime) -> Campaigns:
        """What the core is told of campaigns for this person at `now`: every known campaign, and the throttle's
        holds on the occurrences due for them."""
        return self._throttle.campaigns_for(self.campaigns, self.settings.partitions, partition, state, now)

    def sweep_campaigns(self, budget_seconds: float, partitions: set[int] | None = None) -> bool:
        """A chunk of the campaign sweep (see streams/processing/campaigns.py); True while people are left."""
        return self.sweep.run(self, budget_seconds, partitions) if self.sweep.busy else False

    # States --------------------------------------------------------------------------------------------------

    def latest_state(self, partition: int, key: bytes) -> PersonState | None:
        """The person's latest state, or None for nobody; an unreadable stored state is quarantined as it
        was and the person starts afresh."""
        try:
            return self.store.get(partition, key)
        except UnreadableState as error:
            self.quarantine(key, "read", error, error.stored)
            return PersonState.new(key.decode(errors="replace"))

    def load(self, key: bytes, partition: int) -> PersonState:
        """The person's latest state, a new one for someone never seen."""
        return self.latest_state(partition, key) or PersonState.new(key.decode())

    def save(self, state: PersonState, partition: int) -> None:
        self.store.save(partition, state)
        self.schedule.set(state.person_id.encode(), state.next_deadline(), partition)

    def forget(self, key: bytes, partition: int) -> None:
        self.store.delete(partition, key)
        self._changed_profiles.pop(key, None)
        self.schedule.set(key, None, partition)

    def is_erased(self, partition: int, person_id: str) -> bool:
        return self.store.is_erased(partition, person_hash(person_id, self.settings.hash_key).encode())

    # Output --------------------------------------------------------------------------------------------------

    def publish(self, step: Outcome, partition: int, before: PersonState) -> None:
        if not step.applied:
            return
        settings = self.settings
        state = step.state
        key = state.person_id.encode()
        output = self.output
        if is_contact_id(state.person_id):
            # A contact nobody has yet keeps only what it was told (an opt-out); it is nobody to nudge.
            self.save(state, partition)
            return
        for contact in contact_changes(before.profile, state.profile, settings.hash_key):
            output.add(settings.identity_topic, contact.contact_id.encode(), contact.to_json())
        if step.triggers:
            wall = utc_now()
            for trigger in step.triggers:
                output.add(settings.triggers_topic, key, trigger.to_json())
                self.metrics.triggers.labels(rule=trigger.rule, channel=trigger.channel.value).inc()
                self.metrics.trigger_latency.observe(max(0.0, (wall - trigger.due_at).total_seconds()))
        for suppression in step.suppressed:
            output.add(settings.suppressed_topic, key, suppression.to_json())
            self.metrics.suppressed.labels(rule=suppression.trigger.rule, reason=suppression.reason.value).inc()
        for change in step.segment_changes:
            output.add(settings.segments_topic, key, change.to_json())
        for consent in step.consent_changes:
            output.add(settings.consents_topic, key, consent.to_json())
        for anonymous_id in step.links:
            identity.link(self, anonymous_id, state.person_id)
        self.save(state, partition)
        self._changed_profiles[key] = state

    def publish_snapshots(self) -> None:
        """One profile snapshot per person changed since the last call; ClickHouse keeps the latest."""
        pending, self._changed_profiles = self._changed_profiles, {}
        for key, state in pending.items():
            try:
                snapshot = encode(state.profile)
            except Exception as error:  # this person's snapshot only
                self.quarantine(key, "snapshot", error, state)
                continue
            self.output.add(self.settings.profiles_topic, key, snapshot)

    def take_applied_events(self) -> Counter[tuple[str, str]]:
        """Events applied since the last call, counted into the metrics once per batch (a labelled counter
        costs microseconds per increment)."""
        applied, self.applied_events = self.applied_events, Counter()
        for (kind, name), count in applied.items():
            self.metrics.events.labels(type=kind, event=name).inc(count)
        return applied

    def dead_letter(self, record: SourceRecord, reason: str) -> None:
        limits = self.settings.limits
        letter = DeadLetter(
            reason=reason,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=truncated(record.key, limits).decode(errors="replace") if record.key else None,
            value=truncated(record.value or b"", limits).decode(errors="replace"),
            received_at=utc_now(),
        )
        log.warning("dead letter %s/%d@%d: %s", record.topic, record.partition, record.offset, reason[:200])
        self.metrics.invalid.labels(reason=reason.split(":", 1)[0][:64]).inc()
        self.output.add(self.settings.dead_letter_topic, record.key, letter.model_dump_json().encode())

    def quarantine(self, key: bytes, stage: str, error: Exception, state: PersonState | bytes | None) -> None:
        """Set one person's state aside with the reason; the loop and everyone else go on. It leaves with the
        outputs, so it is acknowledged before the offsets that moved past it are committed."""
        log.error("quarantined %s at %s: %s: %s", key[:64].decode(errors="replace"), stage, type(error).__name__, error)
        self.metrics.quarantined.labels(stage=stage).inc()
        self.schedule.set(key, None, partition_of(key, self.settings.partitions))
        if isinstance(state, bytes):
            text = state
        else:
            try:
                text = repr(state).encode()
            except Exception:  # a state even repr cannot write: the reason is all there is
                text = b""
        limits = self.settings.limits
        record = QuarantinedState(
            person_id=key.decode(errors="replace")[: limits.id_length],
            stage=stage,
            reason=f"{type(error).__name__}: {error}"[:1000],
            value=truncated(text, limits).decode(errors="replace"),
            at=utc_now(),
        )
        self.output.add(self.settings.quarantine_topic, key, record.model_dump_json().encode())


def microseconds(moment: datetime) -> int:
    """A moment as microseconds since the epoch."""
    return int(moment.timestamp() * 1_000_000)
