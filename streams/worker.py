"""The stream worker: reads events in batches, runs the pure core, publishes what it returns.

Nothing here decides anything about a person; `streams.rules.engine` does. Each batch goes through
three steps, and the order is what makes a crash harmless (DESIGN principle 4):

1. every message of the batch is applied to the person's state in memory, and what the core returns
   (triggers, suppressions, segment changes, identity links, dead letters) is handed to the producer;
2. once the broker has acknowledged all of it, each changed person's state is written to the persons
   changelog, one record per person;
3. once those are acknowledged, the offsets are committed.

Steps 2 and 3 run every STORE_EVERY_SECONDS rather than after every batch, so a busy person's state is
encoded and written once for many batches.

A crash before 2 replays the batches since the last store and may publish a trigger again under the same
trigger_id (senders drop it); a crash after 2 replays messages the stored states already count, which the
core skips. The deadlines a person waits for are part of their state, so timers cannot be lost apart from it.

Batches replaced a Faust agent: Faust's per-message machinery capped a worker at about 2.6k events/s
on this project's machine before any of our code ran (bench/worker_throughput.py --faust-baseline).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from schemas.encoding import model_json
from schemas.events import InvalidEvent, parse_event
from schemas.identity import ContactLink, ForgetMerged, InvalidIdentityMessage, Link, Merge, parse_identity
from schemas.limits import truncated
from schemas.privacy import AuditRecord, ErasureRequest, is_contact_id, person_hash
from schemas.rules import RulesConfig
from schemas.settings import Settings
from schemas.triggers import DeadLetter, QuarantinedState
from streams.metrics import WorkerMetrics
from streams.outbox import Outbox, partition_of
from streams.rules.contacts import CONTACT_TRAITS, contact_changes, forgotten_contacts, with_contact
from streams.rules.engine import Step, absorb, advance_time, apply_event
from streams.rules.state import PersonState, SourcePosition
from streams.rules.timers import PartitionClock, utc_now
from streams.schedule import DeadlineIndex, stored_deadline
from streams.state.tables import Table
from streams.state.tables import flush as flush_tables

log = logging.getLogger(__name__)

# Decoded states of the people this worker touched lately: decoding costs more than applying an event.
CACHED_STATES = 50_000

# A person whose deadline is still due after the clock reached it is looked at again after this long.
CHECK_RETRY_SECONDS = 5.0

# Changed states are stored, and then offsets committed, at most this often (and on every rebalance and at
# shutdown), or sooner once this many states wait.
STORE_EVERY_SECONDS = 0.5
MOST_UNSTORED_STATES = 20_000

# After a failed flush (broker away longer than the producer's own retries), wait this long and rewind.
RECOVERY_BACKOFF_SECONDS = 1.0

# The clock's moments enter a person's applied offsets as microseconds: a moment already applied is skipped.
CLOCK_STREAM = "clock"


# CPython's full (oldest-generation) collections walk every live object. A worker holds hundreds of thousands
# of state objects that never form cycles, and replacing states on every event keeps triggering full passes:
# pauses of 50 to 340 ms within 15 s of live traffic, growing with the heap (measured with gc.callbacks).
# Young collections still run (a little less often); a full one only after this many middle-generation ones.
YOUNG_COLLECTION_ALLOCATIONS = 10_000
MIDDLE_COLLECTIONS_BEFORE_FULL = 1_000


def tune_garbage_collector() -> None:
    """For the worker's process: what is alive at start (code, rules) is never scanned again, and full
    collections become rare. Reference counting still frees each state as soon as it is replaced."""
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_ALLOCATIONS, 10, MIDDLE_COLLECTIONS_BEFORE_FULL)


class Worker:
    def __init__(self, settings: Settings, rules: RulesConfig, clock: PartitionClock | None = None) -> None:
        self.settings = settings
        self.rules = rules
        self.clock = clock or PartitionClock(idle_after=timedelta(seconds=settings.idle_after_seconds))
        self.metrics = WorkerMetrics()
        directory = settings.data_dir / "worker" / settings.app_id
        on_disk = settings.table_store == "rocksdb"
        self.persons = Table("persons", settings.changelog_topic("persons"), directory / "persons" if on_disk else None)
        # sha256 of each erased person -> when: late events for them are dropped, nothing else is kept.
        self.erased = Table("erased", settings.changelog_topic("erased"), directory / "erased" if on_disk else None)
        self.schedule = DeadlineIndex()
        self.owned: set[int] = set()  # partitions of the source topics (co-partitioned) this worker holds
        self.url = f"http://{settings.worker_web_host}:{settings.worker_web_port}"
        self._cache: dict[bytes, PersonState] = {}
        self._dirty: dict[bytes, tuple[int, PersonState]] = {}  # changed, not yet stored: key -> (partition, state)
        self._changed_profiles: dict[bytes, PersonState] = {}  # for the next profile snapshots
        self._outbox: Outbox | None = None  # what this batch publishes
        self._applied_events: Counter[tuple[str, str]] = Counter()  # (type, event name) -> count, this batch
        self._lock = asyncio.Lock()  # one batch or one rebalance at a time
        self._stopping = asyncio.Event()
        self._snapshot_at = 0.0
        self._uncommitted: dict[TopicPartition, int] = {}  # next offsets to commit once the states are stored
        self._stored_at = 0.0
        self._batch_received_at = utc_now()  # the wall clock a batch's timestamps are bounded by
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    @property
    def source_topics(self) -> list[str]:
        settings = self.settings
        return [settings.events_topic, settings.identity_topic, settings.privacy_topic]

    def stop(self) -> None:
        self._stopping.set()

    # The loop ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        settings = self.settings
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=f"nudgeflow-worker {self.url}",
            acks="all",
            linger_ms=0,  # the outbox already sends a whole batch at once: waiting longer only adds latency
            max_batch_size=1_048_576,
            max_request_size=4_194_304,
        )
        # The range assignor gives a worker the same partition numbers of every source topic, so a
        # person's events, identity messages and privacy requests all reach the worker holding their state.
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=settings.app_id,
            client_id=f"nudgeflow-worker {self.url}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_partition_fetch_bytes=4_194_304,
        )
        await self._producer.start()
        self._outbox = Outbox(self._producer)
        await self._consumer.start()
        await self._wait_for_source_topics()
        self._consumer.subscribe(self.source_topics, listener=_Rebalance(self))
        try:
            while not self._stopping.is_set():
                batch = await self._next_batch()
                async with self._lock:
                    try:
                        await self._process(batch)
                    except KafkaError as error:
                        await self._recover(error)
        finally:
            async with self._lock:
                await self._store_and_commit()
                self.persons.close()
                self.erased.close()
            await self._consumer.stop()
            await self._producer.stop()

    async def _wait_for_source_topics(self) -> None:
        """Subscribe only once the client's metadata lists every source topic: a consumer that joins its
        group before, say, the privacy topic is known holds none of its partitions until the next metadata
        refresh (minutes), and meanwhile ignores erasures."""
        assert self._consumer is not None
        while not self._stopping.is_set():
            known = await self._consumer.topics()
            missing = [topic for topic in self.source_topics if topic not in known]
            if not missing:
                return
            log.info("waiting for topics %s to exist", ", ".join(missing))
            await asyncio.sleep(0.5)

    async def _next_batch(self) -> dict[TopicPartition, list[Any]]:
        """Wait for messages (at most a timer interval), then gather more for up to worker_linger_ms.

        Under live traffic a fetch brings a handful of messages; every batch costs a few sends and round
        trips and a state write per person, so a few milliseconds of gathering buys a lot of throughput."""
        assert self._consumer is not None
        settings = self.settings
        limit = settings.worker_batch_size
        batch: dict[TopicPartition, list[Any]] = await self._consumer.getmany(
            timeout_ms=int(settings.timer_interval_seconds * 1000), max_records=limit
        )
        gathered = sum(len(messages) for messages in batch.values())
        until = time.monotonic() + settings.worker_linger_ms / 1000
        while batch and gathered < limit and (left := until - time.monotonic()) > 0:
            more = await self._consumer.getmany(timeout_ms=max(1, int(left * 1000)), max_records=limit - gathered)
            for tp, messages in more.items():
                batch.setdefault(tp, []).extend(messages)
                gathered += len(messages)
        return batch

    async def _process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        assert self._consumer is not None
        offsets: dict[TopicPartition, int] = {}
        self._batch_received_at = utc_now()
        for tp, messages in batch.items():
            if tp.partition not in self.owned:
                continue  # fetched before a rebalance took the partition away
            highwater = self._consumer.highwater(tp)
            for message in messages:
                try:
                    await self._handle(message, highwater)
                except Exception as error:  # one poisoned message must not stop the partition
                    log.exception("processing %s/%d@%d failed", message.topic, message.partition, message.offset)
                    await self._dead_letter(message, f"processing failed: {type(error).__name__}: {error}")
            offsets[tp] = messages[-1].offset + 1
            if highwater is not None:
                self.metrics.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(highwater - offsets[tp])
        await self._fire_due_timers()
        await self._publish_profile_snapshots()
        await self._flush(offsets)

    async def _flush(self, offsets: dict[TopicPartition, int]) -> None:
        """Outputs acknowledged, then states, then offsets: see the module's docstring for why."""
        assert self._outbox is not None
        await self._outbox.send()
        # Counted per batch: a labelled Prometheus counter costs microseconds per increment.
        applied, self._applied_events = self._applied_events, Counter()
        for (kind, name), count in applied.items():
            self.metrics.events.labels(type=kind, event=name).inc(count)
        self._uncommitted.update(offsets)
        # A busy person changes in many batches: storing every STORE_EVERY_SECONDS encodes and writes their
        # state once for all of them. A crash replays what was not stored, publishing the same trigger ids.
        if time.monotonic() - self._stored_at >= STORE_EVERY_SECONDS or len(self._dirty) >= MOST_UNSTORED_STATES:
            await self._store_and_commit()

    async def _store_and_commit(self) -> None:
        """Write each changed state once, wait for the broker, then commit the offsets they account for."""
        assert self._consumer is not None and self._outbox is not None
        self._stored_at = time.monotonic()
        dirty, self._dirty = self._dirty, {}
        for key, (partition, state) in dirty.items():
            try:
                encoded = state.to_json()
            except Exception as error:  # this person only: their state is set aside, everyone else is stored
                self._cache.pop(key, None)
                self._quarantine(key, "store", error, state)
                continue
            self.persons.put(partition, key, encoded)
        # The quarantined states leave with the tables' records: both are acknowledged before any commit.
        await flush_tables([self.persons, self.erased], self._outbox)
        offsets, self._uncommitted = self._uncommitted, {}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            # A rebalance took a partition meanwhile: its new owner skips what the stored states count.
            log.info("offsets not committed (%s); the partitions' next owner resumes from the states", error)
        except KafkaError as error:
            # The next commit carries later offsets; until then a restart replays what the states already count.
            log.warning("offsets not committed (%s: %s); the next commit covers them", type(error).__name__, error)

    async def _recover(self, error: Exception) -> None:
        """The broker failed us mid-batch: forget the batch and rewind to the last committed offsets.

        Stored states are only ahead of the committed offsets, never behind, so replaying from there is safe.
        """
        assert self._consumer is not None
        while not self._stopping.is_set():
            log.warning("batch not stored (%s: %s); rewinding to the committed offsets", type(error).__name__, error)
            await asyncio.sleep(RECOVERY_BACKOFF_SECONDS)
            self._cache.clear()
            self._dirty.clear()
            self._uncommitted.clear()
            if self._outbox is not None:
                self._outbox.clear()
            self._applied_events.clear()
            self.persons.discard_staged()
            self.erased.discard_staged()
            try:
                await self.persons.catch_up(self.owned, self.settings.kafka_bootstrap)
                await self.erased.catch_up(self.owned, self.settings.kafka_bootstrap)
                self._rebuild_schedule()
                for tp in self._consumer.assignment():
                    if await self._consumer.committed(tp) is None:
                        await self._consumer.seek_to_beginning(tp)
                    else:
                        await self._consumer.seek_to_committed(tp)
                return
            except KafkaError as again:
                error = again

    # Ownership -----------------------------------------------------------------------------------------

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        partitions = {tp.partition for tp in assigned if tp.topic == self.settings.events_topic}
        async with self._lock:
            for table in (self.persons, self.erased):
                table.revoke(table.partitions - partitions)
                # Until the tables are restored the partitions cannot be processed: keep trying.
                while True:
                    try:
                        await table.assign(partitions, self.settings.kafka_bootstrap)
                        break
                    except KafkaError as error:
                        log.warning("restoring table %s failed (%s); retrying", table.name, error)
                        await asyncio.sleep(RECOVERY_BACKOFF_SECONDS)
            self.owned = partitions
            self._cache.clear()
            self._rebuild_schedule()
        log.info("worker holds partitions %s; %d pending deadlines", sorted(partitions), len(self.schedule))

    async def on_revoked(self) -> None:
        async with self._lock:  # waits for the batch in hand to be stored
            await self._store_and_commit()
            self.owned = set()
            self._cache.clear()

    def _rebuild_schedule(self) -> None:
        self.schedule.clear()
        for partition in self.owned:
            for key, stored in self.persons.items(partition):
                try:
                    deadline = stored_deadline(stored)
                except (ValueError, TypeError, KeyError, AttributeError) as error:
                    # Unreadable: the person's next message quarantines it (latest_state); no deadline meanwhile.
                    log.error("stored state of %r unreadable: %s", key[:64], error)
                    continue
                self.schedule.set(key, deadline, partition)

    # Messages --------------------------------------------------------------------------------------------

    async def _handle(self, message: Any, highwater: int | None) -> None:
        settings = self.settings
        # Built without validation: the three fields come straight from the broker's record.
        position = SourcePosition.model_construct(
            topic=message.topic, partition=message.partition, offset=message.offset
        )
        if message.topic == settings.identity_topic:
            try:
                identity = parse_identity(message.value, settings.limits)
            except InvalidIdentityMessage as error:
                await self._dead_letter(message, str(error))
                return
            await self._handle_identity(identity, position)
            return
        if message.topic == settings.privacy_topic:
            try:
                request = ErasureRequest.model_validate_json(message.value or b"")
            except ValueError as error:
                await self._dead_letter(message, f"invalid privacy request: {error}")
                return
            await self._handle_erasure(request, position)
            return
        try:
            parsed = parse_event(message.value, settings.limits, received_at=self._batch_received_at)
        except InvalidEvent as error:
            await self._dead_letter(message, str(error))
            return
        person_id = parsed.person_id
        key = person_id.encode()
        if message.key != key:
            # Produced under another key: move it to the partition that owns the person.
            await self._send(settings.events_topic, key, message.value)
            return
        # A person held in memory passed this check already, and erasing someone drops them from memory.
        if not self._holds(key) and self._is_erased(message.partition, person_id):
            self.metrics.dropped_erased.inc()
            return
        caught_up = highwater is None or message.offset + 1 >= highwater
        self.clock.observe(message.partition, parsed.timestamp, caught_up=caught_up)
        state = self._load(key, message.partition)
        forward_to = [state.merged_into] if state.merged_into is not None else state.contact_of
        if forward_to:
            # An anonymous id that now belongs to a known person, or an address or number that people have
            # (an SMS STOP naming only the sender): the message follows each of them.
            if not state.already_applied(position):
                self._save(state.model_copy(update={"applied_offsets": state.record(position)}), message.partition)
                document = orjson.loads(message.value)
                if state.contact_of:
                    # What a contact's message says of the address or number is the person's already (and
                    # may be spelt otherwise): it must not rewrite their own.
                    traits = document.get("traits")
                    if isinstance(traits, dict):
                        document["traits"] = {k: v for k, v in traits.items() if k not in CONTACT_TRAITS}
                for person_id in forward_to:
                    await self._send(
                        settings.events_topic, person_id.encode(), orjson.dumps({**document, "userId": person_id})
                    )
            return
        step = apply_event(state, parsed, position, self.rules, settings.limits)
        if step.repeated:
            self.metrics.repeated.inc()
        if step.applied:
            self._applied_events[(parsed.type, parsed.event or parsed.name or "")] += 1
        await self._publish(step, message.partition, before=state)

    async def _handle_identity(
        self, message: Link | Merge | ContactLink | ForgetMerged, position: SourcePosition
    ) -> None:
        """link (keyed by the anonymous id): hand its state over; merge (keyed by the person): absorb it;
        contact (keyed by the contact id): keep who has it; forget_merged: erase what merged into someone."""
        partition = position.partition
        if isinstance(message, ForgetMerged):
            await self._forget_merged(message, partition)
            return
        concerned = message.anonymous_id if isinstance(message, Link) else message.person_id
        if isinstance(message, ContactLink):
            concerned = message.contact_id
        # Nobody erased comes back through an identity message either (the cache relies on it, see _handle).
        if self._is_erased(partition, concerned):
            return
        if isinstance(message, Link):
            anonymous = self._load(concerned.encode(), partition)
            if anonymous.already_applied(position) or anonymous.merged_into is not None:
                return
            merge = Merge(
                anonymous_id=message.anonymous_id, person_id=message.person_id, state=anonymous.model_dump(mode="json")
            )
            await self._send(self.settings.identity_topic, message.person_id.encode(), merge.to_json())
            redirect = PersonState.new(anonymous.person_id).model_copy(
                update={"merged_into": message.person_id, "applied_offsets": anonymous.record(position)}
            )
            self._save(redirect, partition)
            log.info("identity: %s merges into %s", anonymous.person_id, message.person_id)
        elif isinstance(message, Merge):
            absorbed = PersonState.model_validate(message.state)
            state = self._load(message.person_id.encode(), partition)
            step = absorb(state, absorbed, position, self.rules, self.settings.limits)
            await self._publish(step, partition, before=state)
        else:
            await self._link_contact(message, position)

    async def _link_contact(self, message: ContactLink, position: SourcePosition) -> None:
        """Keep the people who have this address or number; an opt-out that reached the contact before
        anybody had it is passed on to whoever comes to have it."""
        contact = self._load(message.contact_id.encode(), position.partition)
        if contact.already_applied(position):
            return
        if message.op == "add":
            persons = with_contact(contact.contact_of, message.person_id, self.settings.limits.persons_per_contact)
        else:
            persons = [person for person in contact.contact_of if person != message.person_id]
        self._save(
            contact.model_copy(update={"contact_of": persons, "applied_offsets": contact.record(position)}),
            position.partition,
        )
        opted_out = {channel: state for channel, state in contact.profile.consent.items() if state == "opted_out"}
        if message.op == "add" and opted_out:
            consent = {
                "type": "identify",
                "userId": message.person_id,
                "messageId": f"contact-consent:{message.contact_id}:{position.offset}",
                "timestamp": (contact.profile.last_seen or utc_now()).isoformat(),
                "traits": {f"{channel}_consent": "opted_out" for channel in opted_out},
            }
            await self._send(self.settings.events_topic, message.person_id.encode(), orjson.dumps(consent))

    async def _forget_merged(self, message: ForgetMerged, partition: int) -> None:
        """Every anonymous id of this partition that was merged into the erased person is erased too,
        however many there were: each gets an erasure request of its own (for the sinks as well)."""
        if partition not in self.owned:
            return
        marker = b'"merged_into":' + orjson.dumps(message.person_id)
        found = {key for key, stored in self.persons.items(partition) if marker in stored}
        found.update(
            key
            for key, (held_partition, state) in self._dirty.items()
            if held_partition == partition and state.merged_into == message.person_id
        )
        for key in sorted(found):
            request = ErasureRequest(
                request_id=message.request_id, person_id=key.decode(), requested_at=message.requested_at
            )
            await self._send(self.settings.privacy_topic, key, request.to_json())

    async def _handle_erasure(self, request: ErasureRequest, position: SourcePosition) -> None:
        """Forget the person: tombstones in every table (and so their changelogs) and on the compacted
        profiles topic, a keyed hash to drop late events, their contacts unindexed, every anonymous id
        merged into them erased in turn, and an audit record."""
        settings = self.settings
        hashed = person_hash(request.person_id, settings.hash_key)
        key = request.person_id.encode()
        partition = position.partition
        if self._is_erased(partition, request.person_id):
            return  # already done: a redelivered request
        state = self.latest_state(partition, key)
        self._cache.pop(key, None)
        self._dirty.pop(key, None)
        self._changed_profiles.pop(key, None)
        if state is not None:
            for change in forgotten_contacts(state.profile, settings.hash_key):
                await self._send(settings.identity_topic, change.contact_id.encode(), change.to_json())
        if not is_contact_id(request.person_id) and state is not None and state.merged_into is None:
            sweep = ForgetMerged(
                person_id=request.person_id, request_id=request.request_id, requested_at=request.requested_at
            )
            for every in range(settings.partitions):  # merged ids live in any partition
                await self._send(settings.identity_topic, None, sweep.to_json(), partition=every)
        self.persons.put(partition, key, None)
        self.schedule.set(key, None, partition)
        self.erased.put(partition, hashed.encode(), utc_now().isoformat().encode())
        await self._send(settings.profiles_topic, key, None)  # compaction removes every earlier snapshot
        record = AuditRecord(
            request_id=request.request_id, kind="erase", person_hash=hashed, component="worker",
            completed_at=utc_now(), detail="profile, rule state, contacts and pending timers deleted",
        )  # fmt: skip
        await self._send(settings.audit_topic, hashed.encode(), record.to_json())
        log.info("erased a person on request %s", request.request_id)

    async def _fire_due_timers(self) -> None:
        """Let each partition's clock reach the people whose deadline it passed (DESIGN principle 2)."""
        for partition in self.schedule.partitions():
            if partition not in self.owned:
                continue
            now = self.clock.now(partition)
            if now is None:
                continue
            moment = SourcePosition(topic=CLOCK_STREAM, partition=partition, offset=_microseconds(now))
            for key in self.schedule.pop_due(partition, now):
                try:
                    state = self._load(key, partition)
                    step = advance_time(state, now, moment, self.rules, self.settings.limits)
                    await self._publish(step, partition, before=state)
                except Exception as error:  # this person's deadline only: set aside, the others still fire
                    self._quarantine(key, "timer", error, self.latest_state(partition, key))
                    continue
                due = step.state.next_deadline()
                if due is not None and due <= now:  # not applied, or bounded work left: look again soon
                    self.schedule.set(key, now + timedelta(seconds=CHECK_RETRY_SECONDS), partition)

    # State -------------------------------------------------------------------------------------------------

    def _load(self, key: bytes, partition: int) -> PersonState:
        """The person's latest state, a new one for someone never seen; kept decoded for the next event."""
        held = self._holds(key)
        state = self.latest_state(partition, key) or PersonState.new(key.decode())
        if not held:
            if len(self._cache) >= CACHED_STATES:
                self._cache.clear()  # crude, and cheap: the hot people come back within a batch or two
            self._cache[key] = state
        return state

    def _holds(self, key: bytes) -> bool:
        """Whether the person's state is in memory (changed and not yet stored, or cached)."""
        return key in self._dirty or key in self._cache

    def _is_erased(self, partition: int, person_id: str) -> bool:
        return self.erased.get(partition, person_hash(person_id, self.settings.hash_key).encode()) is not None

    def _save(self, state: PersonState, partition: int) -> None:
        key = state.person_id.encode()
        self._cache[key] = state
        self._dirty[key] = (partition, state)
        self.schedule.set(key, state.next_deadline(), partition)

    # Output --------------------------------------------------------------------------------------------------

    async def _send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        assert self._outbox is not None
        self._outbox.add(topic, key, value, partition)

    async def _publish(self, step: Step, partition: int, before: PersonState) -> None:
        if not step.applied:
            return
        settings = self.settings
        state = step.state
        key = state.person_id.encode()
        if is_contact_id(state.person_id):
            # A contact nobody has yet keeps only what it was told (an opt-out); it is nobody to nudge.
            self._save(state, partition)
            return
        for contact in contact_changes(before.profile, state.profile, settings.hash_key):
            await self._send(settings.identity_topic, contact.contact_id.encode(), contact.to_json())
        if step.triggers:
            wall = utc_now()
            for trigger in step.triggers:
                await self._send(settings.triggers_topic, key, trigger.to_json())
                self.metrics.triggers.labels(rule=trigger.rule, channel=trigger.channel.value).inc()
                self.metrics.trigger_latency.observe(max(0.0, (wall - trigger.due_at).total_seconds()))
        for suppression in step.suppressed:
            await self._send(settings.suppressed_topic, key, suppression.to_json())
            self.metrics.suppressed.labels(rule=suppression.trigger.rule, reason=suppression.reason.value).inc()
        for change in step.segment_changes:
            await self._send(settings.segments_topic, key, change.to_json())
        for anonymous_id in step.links:
            link = Link(anonymous_id=anonymous_id, person_id=state.person_id)
            await self._send(settings.identity_topic, anonymous_id.encode(), link.to_json())
        self._save(state, partition)
        self._changed_profiles[key] = state

    async def _publish_profile_snapshots(self) -> None:
        # One snapshot per changed person per interval, not one per event: ClickHouse keeps the latest.
        if time.monotonic() - self._snapshot_at < self.settings.timer_interval_seconds:
            return
        self._snapshot_at = time.monotonic()
        pending, self._changed_profiles = self._changed_profiles, {}
        for key, state in pending.items():
            try:
                snapshot = model_json(state.profile)
            except Exception as error:  # this person's snapshot only
                self._quarantine(key, "snapshot", error, state)
                continue
            await self._send(self.settings.profiles_topic, key, snapshot)

    async def _dead_letter(self, message: Any, reason: str) -> None:
        letter = DeadLetter(
            reason=reason,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=truncated(message.key, self.settings.limits).decode(errors="replace") if message.key else None,
            value=truncated(message.value or b"", self.settings.limits).decode(errors="replace"),
            received_at=utc_now(),
        )
        log.warning("dead letter %s/%d@%d: %s", message.topic, message.partition, message.offset, reason)
        self.metrics.invalid.labels(reason=reason.split(":", 1)[0]).inc()
        await self._send(self.settings.dead_letter_topic, message.key, letter.model_dump_json().encode())

    def _quarantine(self, key: bytes, stage: str, error: Exception, state: PersonState | bytes | None) -> None:
        """Set one person's state aside with the reason; the loop and everyone else go on. Sent with the
        batch's outputs, so it is acknowledged before the offsets that moved past it are committed."""
        assert self._outbox is not None
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
        record = QuarantinedState(
            person_id=key.decode(errors="replace")[: self.settings.limits.id_length],
            stage=stage,
            reason=f"{type(error).__name__}: {error}"[:1000],
            value=truncated(text, self.settings.limits).decode(errors="replace"),
            at=utc_now(),
        )
        self._outbox.add(self.settings.quarantine_topic, key, record.model_dump_json().encode())

    # Reads (the HTTP API uses them too) ------------------------------------------------------------------------

    def latest_state(self, partition: int, key: bytes) -> PersonState | None:
        """The person's latest state (changes not yet stored included), or None for nobody."""
        unstored = self._dirty.get(key)
        if unstored is not None:
            return unstored[1]
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        stored = self.persons.get(partition, key)
        if stored is None:
            return None
        try:
            return PersonState.from_json(stored)
        except ValueError as error:  # unreadable: set aside as it was, and the person starts afresh
            if self._outbox is not None:
                self._quarantine(key, "read", error, stored)
            return PersonState.new(key.decode(errors="replace"))

    def segment_members(self, name: str) -> list[str]:
        """Members among the people this worker holds, changes not yet stored included."""
        members = {
            key
            for partition in sorted(self.owned)
            for key, stored in self.persons.items(partition)
            if key not in self._dirty and name in orjson.loads(stored).get("segments", {})
        }
        members.update(key for key, (_, state) in self._dirty.items() if name in state.segments)
        return [key.decode() for key in members]


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.worker.on_revoked()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.worker.on_assigned(assigned)


def _microseconds(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)
