"""The Faust runner: the same processor as the batched runner, hosted by one Faust agent whose people live in
Faust tables (RocksDB through rocksdict, or memory), with Faust's rebalancing, recovery, standby replicas and
web routing.

A worker of its own (what `nudgeflow worker --runner faust` and `faust -A streams.runners.faust_app worker`
run) comes from `build_app`; `install` adds nudgeflow to a Faust app of yours, with one call::

    import faust

    from schemas.rules import load_rules
    from schemas.settings import Settings
    from streams.runners.faust import install

    settings = Settings()  # NUDGEFLOW_* variables: topics, partitions, tokens, the hash secret
    app = faust.App(settings.app_id, broker="kafka://127.0.0.1:9092", topic_partitions=settings.partitions)
    nudgeflow = install(app, settings, load_rules(settings.rules_file))

    @app.agent(app.topic(settings.triggers_topic, value_type=bytes, value_serializer="raw"))
    async def send_nudges(triggers):
        async for trigger in triggers:
            ...  # your sender

`install` adds the agent `nudgeflow.processor`, the tables `persons` and `erased`, the clock timer, and the
pages `/profiles/{person_id}`, `/segments/{name}/members`, `/metrics` and `/health`; every path of the app's
web server then wants a bearer token of `api_tokens` except `/health` (and `/metrics` on loopback).

How it keeps the batched runner's checkpoint order (docs/architecture.md, "Checkpoint order"): the agent takes
the co-partitioned events, identity, privacy and clock topics without acking (`noack_take`); for each batch it
sends the processor's outputs with Faust's producer and waits for the broker, then writes the changed states to
the tables and waits for their changelog records, and only then acks the batch's events. Faust commits acked
offsets only, so an offset never passes an output or a state the broker does not have. Faust's own acking in
`take()` acks in a `finally`, so a batch cut short by a crash or a cancelled agent would be committed; that is
why acks are manual here. Faust's exactly-once guarantee is not used (faust-streaming issues 323, 517, 177),
and the agent runs one actor (concurrency=1), the only safe number for an agent that commits offsets
(faust-streaming issue 606).

Time: a Faust timer cannot write a table, so the timer only sends one tick per owned partition to the clock
topic; the agent reads the tick among the partition's records and fires the deadlines the partition's clock
passed. The deadline index and the partitions owned follow Faust's assignment: cleared when partitions are
revoked, rebuilt from the tables once Faust has recovered them.

Campaigns: a task of the app reads the campaigns topic (streams/processing/campaigns.py), and the agent waits
for it to have read the topic to its end before its first batch. The agent sweeps a chunk of the people of
the partitions in each batch; while the sweep has people left, a timer ticks its partitions so it goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import faust
import faust.streams
from aiohttp import web
from faust.web import Request, View

from schemas.access import token_guard
from schemas.connections import faust_broker_options
from schemas.metrics import metrics_response
from schemas.rules import RulesConfig
from schemas.settings import Settings
from streams.broker.outbox import partition_of
from streams.metrics import WorkerMetrics
from streams.processing.campaigns import SWEEP_BUDGET_SECONDS
from streams.processing.processor import Processor
from streams.processing.types import Hosting, SourceRecord
from streams.processing.whole_topic import WholeTopicReader
from streams.rules.person import PersonState
from streams.state.store import decode_cached
from streams.timers import PartitionClock, utc_now
from streams.web.documents import profile_document, segment_page

log = logging.getLogger(__name__)

HEALTH_PATH = "/health"
AGENT_NAME = "nudgeflow.processor"
# Once the broker failed a batch's sends (after the producer's own retries), wait this long and send again.
RETRY_SECONDS = 1.0
# While a campaign sweep has people left, the partitions it still covers are ticked this often: only the
# agent, with a record of the partition in hand, can write their states.
SWEEP_TICK_SECONDS = 0.05


class FaustOutput:
    """The processor's Output: records kept until the agent sends them with Faust's producer and waits."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._records: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    def add(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        self._records.append((topic, key, value, partition))

    def take(self) -> list[tuple[str, bytes | None, bytes | None, int | None]]:
        records, self._records = self._records, []
        return records

    async def send(self, records: list[tuple[str, bytes | None, bytes | None, int | None]]) -> None:
        """Send and wait until the broker has every one; raises the first failure once all have settled."""
        producer = self.app.producer
        deliveries = [
            await producer.send(topic, key, value, partition, None, None) for topic, key, value, partition in records
        ]
        results = await asyncio.gather(*deliveries, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


# A change of the persons or erased table waiting for the checkpoint: (table, partition, key, value or None).
Write = tuple[Any, int, bytes, bytes | None]


class FaustStore:
    """A PersonStore over the persons and erased Faust tables, with decoded states cached.

    Faust's tables find a key's partition from the event being processed (a context variable its stream
    iteration sets); the agent handles a batch at a time, so the store names the partition itself, with a
    record of that partition the agent handed it (`hold`)."""

    def __init__(self, settings: Settings, persons: Any, erased: Any) -> None:
        self.partitions = settings.partitions
        self.persons = persons
        self.erased = erased
        self._cache: dict[bytes, PersonState] = {}
        self._pending: dict[bytes, tuple[int, PersonState | None]] = {}  # None: deleted
        self._pending_erased: dict[bytes, tuple[int, bytes]] = {}
        self._records: dict[int, Any] = {}  # partition -> a Faust event of it, in the batch in hand

    # For the runner --------------------------------------------------------------------------------------------

    def hold(self, partition: int, event: Any) -> None:
        self._records[partition] = event

    @contextmanager
    def _at(self, partition: int) -> Iterator[None]:
        record = self._records.get(partition)
        if record is None:  # outside the agent (the web pages): Faust's stores look the key up themselves
            yield
            return
        token = faust.streams._current_event.set(weakref.ref(record))
        try:
            yield
        finally:
            faust.streams._current_event.reset(token)

    def take_writes(self, quarantine: Any) -> list[Write]:
        """Every change since the last checkpoint, states encoded; a state that cannot be encoded is quarantined
        (its record leaves with the outputs, before any ack) and the person's stored state stays as it was."""
        writes: list[Write] = []
        pending, self._pending = self._pending, {}
        for key, (partition, state) in pending.items():
            if state is None:
                writes.append((self.persons, partition, key, None))
                continue
            try:
                encoded = state.to_json()
            except Exception as error:  # this person only
                self._cache.pop(key, None)
                quarantine(key, "store", error, state)
                continue
            writes.append((self.persons, partition, key, encoded))
        erased, self._pending_erased = self._pending_erased, {}
        writes.extend((self.erased, partition, hashed, at) for hashed, (partition, at) in erased.items())
        return writes

    def write(self, writes: list[Write]) -> None:
        """Into the local stores; `send` then sends them to the changelogs."""
        for table, partition, key, value in writes:
            with self._at(partition):
                if value is None:
                    if key in table.data:
                        del table.data[key]
                else:
                    table.data[key] = value

    async def send(self, writes: list[Write]) -> list[Any]:
        """The writes' changelog records, sent: returns the deliveries to wait for.

        Sent directly rather than through Faust's producer buffer (where `table[key] = value` queues them): a
        batch's hundreds of records made the conductor warn of a full buffer and stop deliveries until it
        drained. The table's own callback records the changelog offset its store holds, as for `table[key]`."""
        return [
            await table.changelog_topic.send(
                key=key,
                value=value,
                partition=partition,
                key_serializer="raw",
                value_serializer="raw",
                callback=table._on_changelog_sent,
                force=True,
            )
            for table, partition, key, value in writes
        ]

    def release(self) -> None:
        self._records.clear()

    def forget_decoded(self) -> None:
        self._cache.clear()

    def discard_pending(self) -> None:
        self._cache.clear()
        self._pending.clear()
        self._pending_erased.clear()

    def held_states(self) -> int:
        return len(self.persons)

    def segment_members(self, name: str, partitions: set[int]) -> list[str]:
        members = {
            key
            for partition in sorted(partitions)
            for key, stored in self.stored_items(partition)
            if key not in self._pending and name in PersonState.from_json(stored).segments
        }
        members.update(key for key, (_, state) in self._pending.items() if state is not None and name in state.segments)
        return [key.decode() for key in members]

    # PersonStore ---------------------------------------------------------------------------------------------

    def get(self, partition: int, key: bytes) -> PersonState | None:
        pending = self._pending.get(key)
        if pending is not None:
            return pending[1]
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        with self._at(partition):
            stored = self.persons.data.get(key)
        return None if stored is None else decode_cached(self._cache, key, stored)

    def holds(self, key: bytes) -> bool:
        pending = self._pending.get(key)
        return pending[1] is not None if pending is not None else key in self._cache

    def save(self, partition: int, state: PersonState) -> None:
        key = state.person_id.encode()
        self._cache[key] = state
        self._pending[key] = (partition, state)

    def delete(self, partition: int, key: bytes) -> None:
        self._cache.pop(key, None)
        self._pending[key] = (partition, None)

    def is_erased(self, partition: int, hashed: bytes) -> bool:
        if hashed in self._pending_erased:
            return True
        with self._at(partition):
            return self.erased.data.get(hashed) is not None

    def mark_erased(self, partition: int, hashed: bytes, at: bytes) -> None:
        self._pending_erased[hashed] = (partition, at)

    def stored_items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        # The tables iterate the partitions this worker holds; a person's state lives on the partition their
        # id hashes to, as every producer here partitions.
        for key, value in self.persons.items():
            if partition_of(key, self.partitions) != partition:
                continue
            pending = self._pending.get(key)
            if pending is not None and pending[1] is None:
                continue  # deleted, not yet written
            yield key, value

    def unstored(self, partition: int) -> Iterator[PersonState]:
        return (state for held, state in self._pending.values() if held == partition and state is not None)


class FaustRunner(Hosting):
    """nudgeflow on a Faust app: the agent, the tables, the clock timer and the web pages."""

    def __init__(
        self, app: faust.App, settings: Settings, rules: RulesConfig, clock: PartitionClock | None = None
    ) -> None:
        self.app = app
        self.settings = settings
        self.rules = rules
        self.metrics = WorkerMetrics()
        self.persons = self._table("persons")
        self.erased = self._table("erased")
        self.store = FaustStore(settings, self.persons, self.erased)
        self.output = FaustOutput(app)
        clock = clock or PartitionClock(idle_after=timedelta(seconds=settings.idle_after_seconds))
        self.processor = Processor(settings, rules, self.store, self.output, clock, self.metrics)
        self.url = f"http://{settings.worker_web_host}:{settings.worker_web_port}"
        self._snapshot_at = 0.0
        self._lock = asyncio.Lock()  # a checkpoint at a time: the agent's, or none while revoking
        self._next_offset: dict[Any, int] = {}  # source partition -> the offset the agent should see next
        self._behind: dict[Any, int] = {}  # source partition -> the hole it is read again from
        topics = [*self.processor.source_topics, settings.clock_topic]
        self.source = app.topic(*topics, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        app.agent(self.source, name=AGENT_NAME, concurrency=1)(self._process)
        app.timer(settings.timer_interval_seconds, name="nudgeflow.clock")(self._tick)
        self._control = WholeTopicReader(settings, settings.campaigns_topic)
        self._campaigns_known = asyncio.Event()  # the campaigns topic read to its end once
        app.task(self._read_campaigns)
        self._recommendations = WholeTopicReader(settings, settings.recommendations_topic)
        self._recommendations_known = asyncio.Event()  # likewise the recommendations topic
        app.task(self._read_recommendations)
        app.timer(SWEEP_TICK_SECONDS, name="nudgeflow.campaigns")(self._sweep_tick)
        self.persons.on_recover(self._on_recovered)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_before_shutdown.connect(self._on_shutdown)
        self._add_pages()

    def _table(self, name: str) -> Any:
        settings = self.settings
        rocksdb = settings.table_store == "rocksdb"
        # The changelog is named by the settings, not by the app's id: the same topic whatever app hosts it.
        changelog = self.app.topic(
            settings.changelog_topic(name),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
            compacting=True,
            acks=False,
            internal=True,
            maxsize=131_072,
            allow_empty=True,
        )
        return self.app.Table(
            name,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
            changelog_topic=changelog,
            store="rocksdb://" if rocksdb else "memory://",
            options={"driver": "rocksdict"} if rocksdb else None,
            help=f"nudgeflow's {name} table",
        )

    # What the pages read ---------------------------------------------------------------------------------------

    # The agent -------------------------------------------------------------------------------------------------

    async def _process(self, stream: Any) -> None:
        settings = self.settings
        within = max(settings.worker_linger_ms / 1000, 0.001)
        async for events in stream.noack_take(settings.worker_batch_size, within=within):
            # A deadline of a campaign not yet read would be dropped as nobody's; and the first nudges after a
            # start carry recommendations like the later ones.
            await self._campaigns_known.wait()
            await self._recommendations_known.wait()
            async with self._lock:
                received_at = utc_now()
                taken = [event for event in events if self._in_order(event.message.tp, event.message.offset)]
                for event in taken:
                    self._apply(event, received_at)
                held = {event.message.partition for event in events}
                self.processor.sweep_campaigns(SWEEP_BUDGET_SECONDS, held)
                done = await self._checkpoint(taken)
            if not done:
                return  # stopping with a batch the broker never took: unacked, so never committed
            for event in taken:
                await stream.ack(event)
            await self._seek_back()

    def _apply(self, event: Any, received_at: Any) -> None:
        message = event.message
        partition = message.partition
        processor = self.processor
        self.store.hold(partition, event)
        if message.topic == self.settings.clock_topic:
            if partition in processor.owned and (now := processor.clock.now(partition)) is not None:
                processor.fire_partition(partition, now)
            return
        highwater = self.app.consumer.highwater(message.tp)
        caught_up = highwater is None or message.offset + 1 >= highwater
        processor.handle(message, caught_up, received_at)

    def _in_order(self, tp: Any, offset: int) -> bool:
        """Whether the agent may apply this record: False for one past a hole in its partition.

        Nothing writes the source topics in transactions and none is compacted (but the scores topic), so
        their offsets have no holes. Faust can still skip records: it drops the ones it fetched when a
        rebalance begins, and one it stamped with the old generation after seeking is dropped too; once a
        later record is acked it commits past them when the partition had no commit
        (faust/transport/consumer.py, `_new_offset`). Seen in tests/integration/test_scale_out.py as a profile
        one event short. Such a hole is refused here and read again: the records after it are neither applied
        nor acked, and `_seek_back` moves the partition back to the hole."""
        if tp.topic == self.settings.scores_topic:
            # Compacted, so its offsets do have holes: a skipped score waits for the next training run.
            return True
        expected = self._next_offset.get(tp)
        if expected is None or offset == expected:
            self._next_offset[tp] = offset + 1
            self._behind.pop(tp, None)
            return True
        if offset < expected:
            return True  # read again after a seek: the processor skips what the states have applied
        if tp not in self._behind:
            self.metrics.skipped.inc(offset - expected)
            log.warning("Faust skipped %s[%d] offsets %d to %d: reading them again", tp.topic, tp.partition,
                        expected, offset - 1)  # fmt: skip
        self._behind[tp] = expected
        return False

    async def _seek_back(self) -> None:
        """Seek each partition with a hole back to it (or to its first record, if retention took the hole)."""
        if not self._behind:
            return
        consumer: Any = self.app.consumer
        holes = dict(self._behind)
        try:
            earliest = await consumer.earliest_offsets(*holes)
            targets = {tp: max(offset, earliest.get(tp) or 0) for tp, offset in holes.items()}
            self._next_offset.update(targets)
            await consumer.seek_wait(targets)
        except Exception as error:  # given away meanwhile: the next owner starts from the commit
            log.warning("seeking back to %s failed: %s", holes, error)

    async def _checkpoint(self, events: list[Any]) -> bool:
        """Outputs acknowledged, then states written and their changelog records acknowledged; False if the
        app stopped before the broker took them."""
        processor = self.processor
        if time.monotonic() - self._snapshot_at >= self.settings.timer_interval_seconds:
            self._snapshot_at = time.monotonic()
            processor.publish_snapshots()
        writes = self.store.take_writes(processor.quarantine)
        outputs = self.output.take()
        if not await self._until_sent(lambda: self.output.send(outputs)):
            return False
        self.store.write(writes)
        self.store.release()

        async def changelog() -> None:
            deliveries = await self.store.send(writes)
            results = await asyncio.gather(*deliveries, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

        if not await self._until_sent(changelog):
            return False
        processor.take_applied_events()
        self._lag(events)
        return True

    async def _until_sent(self, send: Any) -> bool:
        while True:
            try:
                await send()
                return True
            except Exception as error:  # the broker away longer than the producer's own retries
                if self.app.should_stop:
                    log.error("stopping with a batch not sent (%s); a restart replays it", error)
                    self.store.discard_pending()
                    return False
                log.warning("batch not sent (%s: %s); sending it again", type(error).__name__, error)
                await asyncio.sleep(RETRY_SECONDS)

    def _lag(self, events: list[Any]) -> None:
        last: dict[Any, int] = {}
        for event in events:
            last[event.message.tp] = event.message.offset
        consumer = self.app.consumer
        for tp, offset in last.items():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                self.metrics.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(highwater - offset - 1)

    async def _tick(self) -> None:
        """One tick per partition this worker owns: the agent fires due deadlines when it reads it."""
        producer = self.app.producer
        for partition in sorted(self.processor.owned):
            try:
                await producer.send(self.settings.clock_topic, None, b"", partition, None, None)
            except Exception as error:  # the next interval ticks again
                log.warning("clock tick for partition %d not sent: %s", partition, error)

    async def _sweep_tick(self) -> None:
        """A tick for each partition the campaign sweep still covers, so the agent sweeps a chunk of it."""
        sweep = self.processor.sweep
        if not sweep.busy:
            return
        producer = self.app.producer
        for partition in sorted(sweep.partitions & self.processor.owned):
            try:
                await producer.send(self.settings.clock_topic, None, b"", partition, None, None)
            except Exception as error:  # the next interval ticks again
                log.warning("sweep tick for partition %d not sent: %s", partition, error)

    # Campaigns -------------------------------------------------------------------------------------------------

    async def _read_campaigns(self) -> None:
        await self._read_whole(self._control, self.processor.control, self._campaigns_known)

    async def _read_recommendations(self) -> None:
        await self._read_whole(self._recommendations, self.processor.recommendation, self._recommendations_known)

    async def _read_whole(
        self, reader: WholeTopicReader, apply: Callable[[SourceRecord], None], known: asyncio.Event
    ) -> None:
        """A topic every runner reads whole, from its beginning, then what arrives, for as long as the app runs."""
        while not self.app.should_stop:
            try:
                await reader.start()
                records = await reader.catch_up()
                async with self._lock:
                    for record in records:
                        apply(record)
                known.set()
                while not self.app.should_stop:
                    records = await reader.poll(timeout_ms=500)
                    if records:
                        async with self._lock:  # between two batches: a dead letter leaves with the next one
                            for record in records:
                                apply(record)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the broker away: read the whole topic again (a repeat changes nothing)
                kind = type(error).__name__
                log.warning("topic %s not read (%s: %s); reading it again", reader.topic, kind, error)
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                await reader.stop()

    # Ownership -------------------------------------------------------------------------------------------------

    async def _on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Faust has waited for the agent to ack what it took: nothing is pending but profile snapshots.
        async with self._lock:
            await self._send_snapshots()
            self.processor.owned = set()
            self._next_offset.clear()
            self._behind.clear()
            self.processor.schedule.clear()
            self.store.forget_decoded()

    async def _on_shutdown(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        async with self._lock:
            await self._send_snapshots()

    async def _send_snapshots(self) -> None:
        """The snapshots of people changed since the last ones, before their partitions move or the worker
        stops: sent later, by a worker that no longer holds them, one could land after the next owner's."""
        self.processor.publish_snapshots()
        records = self.output.take()
        if not records:
            return
        try:
            await self.output.send(records)
        except Exception as error:  # a view only: the person's next change publishes it again
            log.warning("profile snapshots not sent: %s", error)

    async def _on_recovered(self) -> None:
        partitions = {
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == self.settings.events_topic
        }
        await self._rewind_uncommitted()
        async with self._lock:
            self.processor.owned = partitions
            self.store.forget_decoded()
            self.processor.rebuild_schedule()
        log.info("worker holds partitions %s; %d pending deadlines", sorted(partitions), len(self.schedule))

    async def _rewind_uncommitted(self) -> None:
        """Seek the source partitions that have no committed offset back to their first record.

        Records Faust fetched but dropped during a rebalance (the flow stopped, or the generation changed
        under them) it rewinds by seeking to the committed offsets; aiokafka's seek_to_committed leaves a
        partition without a commit (or committed at 0) where it is, so those records were skipped, and once
        a later one was acked Faust committed past them (faust/transport/consumer.py, _new_offset checks
        for a hole only after a first commit). Seen in tests/integration/test_scale_out.py: the first
        events of a fresh topic never applied. Reading such a partition from its start again is what a
        restart does, and the processor skips what the stored states count already."""
        consumer: Any = self.app.consumer  # the aiokafka driver's, which has seek_to_committed
        sources = {*self.processor.source_topics, self.settings.clock_topic}
        assigned = [tp for tp in consumer.assignment() if tp.topic in sources]
        if not assigned:
            return
        committed = await consumer.seek_to_committed()
        fresh = [tp for tp in assigned if not committed.get(tp)]
        earliest = await consumer.earliest_offsets(*fresh) if fresh else {}
        if fresh:
            await consumer.seek_wait({tp: earliest.get(tp) or 0 for tp in fresh})
        # Where each partition's records resume: what comes after is checked for holes.
        self._next_offset = {tp: committed.get(tp) or earliest.get(tp) or 0 for tp in assigned}
        self._behind = {}

    # Web pages -------------------------------------------------------------------------------------------------

    def _add_pages(self) -> None:
        app = self.app
        settings = self.settings
        runner = self
        guard = token_guard(settings.api_tokens, public=[HEALTH_PATH], listen_host=settings.worker_web_host)
        cast(Any, app.web).web_app.middlewares.append(guard)

        def routable(handler: Any) -> Any:
            """Faust's table_route fails (a TypeError, then a KeyError) until its producer's metadata lists the
            table's topic and the group's first assignment is known: answer 503 then, as during a handover."""

            async def route(view: View, request: Request, *args: Any, **kwargs: Any) -> Any:
                try:
                    app.router.key_store(runner.persons.name, kwargs["person_id"])
                except (TypeError, KeyError):
                    return web.json_response(
                        {"error": "the worker is starting; retry shortly"}, status=503, headers={"Retry-After": "1"}
                    )
                return await handler(view, request, *args, **kwargs)

            return route

        @app.page("/profiles/{person_id}")
        @routable
        @app.table_route(table=self.persons, match_info="person_id")
        async def profile_view(view: View, request: Request, *args: Any, **kwargs: Any) -> Any:
            person_id = kwargs["person_id"]
            key = person_id.encode()
            partition = partition_of(key, settings.partitions)
            if partition not in runner.owned:
                return web.json_response(
                    {"error": f"partition {partition} is being handed over between workers; retry shortly"},
                    status=503,
                    headers={"Retry-After": "1"},
                )
            state = runner.processor.latest_state(partition, key)
            if state is None:
                return web.json_response({"error": f"no profile for {person_id}"}, status=404)
            if state.merged_into is not None:
                return web.json_response({"person_id": person_id, "merged_into": state.merged_into}, status=404)
            return web.json_response(profile_document(state, utc_now(), runner.rules))

        @app.page("/segments/{name}/members")
        async def segment_members(view: View, request: Request, *args: Any, **kwargs: Any) -> Any:
            name = kwargs["name"]
            if name not in {segment.name for segment in runner.rules.segments}:
                return web.json_response({"error": f"no segment named {name}"}, status=404)
            try:
                limit = max(1, min(1000, int(request.query.get("limit", "100"))))
            except ValueError:
                return web.json_response({"error": "limit must be a whole number"}, status=400)
            # Each worker knows the partitions it holds; with several workers, ask each and merge.
            members = runner.store.segment_members(name, runner.owned)
            page = segment_page(members, request.query.get("after"), limit)
            return web.json_response({**page, "segment": name, "partitions": sorted(runner.owned)})

        @app.page("/metrics")
        async def metrics_view(view: View, request: Request, *args: Any, **kwargs: Any) -> Any:
            runner.metrics.pending_timers.set(len(runner.schedule))
            runner.metrics.profiles.set(runner.store.held_states())
            return metrics_response(runner.metrics)

        @app.page(HEALTH_PATH)
        async def health_view(view: View, request: Request, *args: Any, **kwargs: Any) -> Any:
            return web.json_response({"ok": True, "partitions": len(runner.owned)})


def install(app: faust.App, settings: Settings, rules: RulesConfig) -> FaustRunner:
    """Add nudgeflow's agent, tables, clock timer and web pages to `app` (see the module's docstring)."""
    from streams.broker.topics import ensure_topics

    runner = FaustRunner(app, settings, rules)
    # Faust creates no source topic with the app's partition count; nudgeflow does, before the consumer
    # subscribes (`faust worker` sends this signal as it starts).

    def create_topics(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        ensure_topics(settings)

    app.on_worker_init.connect(create_topics)
    return runner


def app_settings(settings: Settings) -> dict[str, Any]:
    """The Faust configuration of nudgeflow's own app."""
    host, port = settings.worker_web_host, settings.worker_web_port
    return {
        **faust_broker_options(settings),
        "store": "rocksdb://" if settings.table_store == "rocksdb" else "memory://",
        "datadir": str(settings.data_dir / "faust"),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "topic_disable_leader": True,
        "table_standby_replicas": settings.faust_standby_replicas,
        "consumer_auto_offset_reset": "earliest",
        # aiokafka's defaults, as the batched runner has them: a worker that died leaves the group in 10 s.
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 3.0,
        "web_enabled": True,
        "web_bind": host,
        "web_host": host,
        "web_port": port,
        "canonical_url": f"http://{host}:{port}",
        # Faust's own table pages would show states without nudgeflow's pages' checks.
        "web_tables_enabled": False,
        "autodiscover": False,
    }


def build_app(settings: Settings, rules: RulesConfig) -> faust.App:
    """nudgeflow's own Faust app, nudgeflow installed (what `nudgeflow worker --runner faust` runs)."""
    configured = app_settings(settings)
    Path(configured["datadir"]).mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    app = faust.App(settings.app_id, **configured)
    install(app, settings, rules)
    return app


def run_worker(settings: Settings, rules: RulesConfig) -> int:
    """Run `build_app`'s app as a Faust worker in this process until SIGTERM or SIGINT."""
    from streams.broker.topics import ensure_topics

    ensure_topics(settings)
    app = build_app(settings, rules)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()  # exits the process with the worker's exit code
    return 0
