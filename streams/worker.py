"""The Faust worker: wires the events and timer-check topics, the person table and the pure core.

Nothing here decides anything about a person; `streams.rules.engine` does. This module reads messages,
loads and stores state, publishes what the core returns, and turns deadlines into timer checks.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import faust
import orjson

from schemas.events import InvalidEvent, parse_event
from schemas.privacy import AuditRecord, ErasureRequest, person_hash
from schemas.rules import RulesConfig
from schemas.settings import Settings
from schemas.triggers import DeadLetter
from streams.metrics import WorkerMetrics
from streams.rules.engine import Step, absorb, advance_time, apply_event
from streams.rules.state import PersonState, SourcePosition
from streams.rules.timers import PartitionClock, utc_now
from streams.schedule import DeadlineIndex
from streams.views import profile_document, segment_page

log = logging.getLogger(__name__)

# How many decoded person states a worker keeps in memory before starting the cache afresh.
CACHED_STATES = 20_000  # about 12 KB each once decoded

# A timer check that produced nothing (its deadline moved meanwhile) may be asked for again after this long.
CHECK_RETRY_SECONDS = 5.0


def _decode_check(raw: bytes) -> tuple[str, datetime]:
    document = orjson.loads(raw)
    return str(document["person_id"]), datetime.fromisoformat(document["now"])


def build_app(settings: Settings, rules: RulesConfig, clock: PartitionClock | None = None) -> faust.App:
    clock = clock or PartitionClock(idle_after=timedelta(seconds=settings.idle_after_seconds))
    store = "rocksdb://" if settings.table_store == "rocksdb" else "memory://"
    datadir = settings.data_dir / "worker" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        store=store,
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_disable_leader=True,
        table_standby_replicas=0,
        web_host=settings.worker_web_host,
        web_port=settings.worker_web_port,
        canonical_url=f"http://{settings.worker_web_host}:{settings.worker_web_port}",
        web_in_thread=False,
        consumer_auto_offset_reset="earliest",
        autodiscover=False,
        # A state is a few KB: with the default 16 KB batches every send soon waits a broker round trip.
        producer_linger_ms=5,
        producer_max_batch_size=1_048_576,
        producer_max_request_size=4_194_304,
        topic_replication_factor=settings.replication_factor,
        value_serializer="raw",  # tables hold bytes we encode with pydantic/orjson, far faster than Faust's json
    )

    def raw_topic(*names: str) -> faust.TopicT:
        # Bytes in and out: decoding is ours, so a malformed message becomes a dead letter, not a crash.
        return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    inputs = raw_topic(
        settings.events_topic, settings.timer_checks_topic, settings.identity_topic, settings.privacy_topic
    )
    audit_topic = raw_topic(settings.audit_topic)
    events_topic = raw_topic(settings.events_topic)
    identity_topic = raw_topic(settings.identity_topic)
    privacy_topic = raw_topic(settings.privacy_topic)
    triggers_topic = raw_topic(settings.triggers_topic)
    suppressed_topic = raw_topic(settings.suppressed_topic)
    segments_topic = raw_topic(settings.segments_topic)
    profiles_topic = raw_topic(settings.profiles_topic)
    dead_letters = raw_topic(settings.dead_letter_topic)
    checks_topic = raw_topic(settings.timer_checks_topic)
    persons = app.Table("persons", default=None, partitions=settings.partitions, key_type=bytes, value_type=bytes)
    # person -> {"due": iso time, "partition": n}: the pending deadlines the timer scans (DESIGN principle 3).
    deadlines = app.Table("deadlines", default=None, partitions=settings.partitions, key_type=bytes, value_type=bytes)
    # sha256 of each erased person -> when: late events for them are dropped, nothing else is kept.
    erased = app.Table("erased", default=None, partitions=settings.partitions, key_type=bytes, value_type=bytes)
    metrics = WorkerMetrics()

    # Decoded states of the people this worker touched lately, so a busy person is not parsed per event.
    # The table stays the truth: the cache is dropped on every rebalance and when it grows too large.
    cache: dict[bytes, PersonState] = {}
    # People whose profile changed since the last snapshot: the timer publishes one snapshot each.
    changed_profiles: dict[bytes, PersonState] = {}

    schedule = DeadlineIndex()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_cached_states(sender: Any, revoked: Any, **kwargs: Any) -> None:
        cache.clear()

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def rebuild_schedule(sender: Any, **kwargs: Any) -> None:
        # Sent once the tables are recovered: the deadlines table now holds every owned partition.
        cache.clear()
        schedule.clear()
        for key, stored in list(deadlines.items()):
            if stored is not None:
                entry = orjson.loads(stored)
                schedule.set(key, datetime.fromisoformat(entry["due"]), int(entry["partition"]))
        log.info("timers: %d pending deadlines after rebalance", len(schedule))

    def load_state(person_id: str) -> PersonState:
        key = person_id.encode()
        cached = cache.get(key)
        if cached is not None:
            return cached
        stored = persons.get(key)
        return PersonState.new(person_id) if stored is None else PersonState.model_validate_json(stored)

    async def dead_letter(message: Any, reason: str) -> None:
        letter = DeadLetter(
            reason=reason,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key.decode(errors="replace") if message.key else None,
            value=(message.value or b"").decode(errors="replace"),
            received_at=utc_now(),
        )
        log.warning("dead letter %s/%d@%d: %s", message.topic, message.partition, message.offset, reason)
        metrics.invalid.labels(reason=reason.split(":", 1)[0]).inc()
        await dead_letters.send(key=message.key, value=letter.model_dump_json().encode())

    async def publish(step: Step, partition: int) -> None:
        if not step.applied:
            return
        state = step.state
        key = state.person_id.encode()
        wall = utc_now()
        for trigger in step.triggers:
            await triggers_topic.send(key=key, value=trigger.to_json())
            metrics.triggers.labels(rule=trigger.rule, channel=trigger.channel.value).inc()
            metrics.trigger_latency.observe(max(0.0, (wall - trigger.due_at).total_seconds()))
        for suppression in step.suppressed:
            await suppressed_topic.send(key=key, value=suppression.to_json())
            metrics.suppressed.labels(rule=suppression.trigger.rule, reason=suppression.reason.value).inc()
        for change in step.segment_changes:
            await segments_topic.send(key=key, value=change.to_json())
        for anonymous_id in step.links:
            link = {"kind": "link", "anonymous_id": anonymous_id, "person_id": state.person_id}
            await identity_topic.send(key=anonymous_id.encode(), value=orjson.dumps(link))
        save(state, partition)
        changed_profiles[key] = state

    def save(state: PersonState, partition: int) -> None:
        key = state.person_id.encode()
        previous = cache.get(key)
        persons[key] = state.model_dump_json(exclude_defaults=True).encode()  # defaults come back on reading
        if len(cache) >= CACHED_STATES:
            cache.clear()
        cache[key] = state
        due = state.next_deadline()
        schedule.set(key, due, partition)
        if previous is not None and previous.next_deadline() == due:
            return  # the durable timer entry is already right
        entry = None if due is None else orjson.dumps({"due": due.isoformat(), "partition": partition})
        if deadlines.get(key) != entry:
            if entry is None:
                del deadlines[key]
            else:
                deadlines[key] = entry

    @app.agent(inputs, concurrency=1, name="process")
    async def process(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                await handle(message)
            except Exception as error:  # one poisoned message must not stop the partition
                log.exception("processing %s/%d@%d failed", message.topic, message.partition, message.offset)
                await dead_letter(message, f"processing failed: {type(error).__name__}: {error}")

    async def handle(message: Any) -> None:
        position = SourcePosition(topic=message.topic, partition=message.partition, offset=message.offset)
        if message.topic == settings.timer_checks_topic:
            person_id, now = _decode_check(message.value)
            await publish(advance_time(load_state(person_id), now, position, rules), message.partition)
            return
        if message.topic == settings.identity_topic:
            await handle_identity(orjson.loads(message.value), position)
            return
        if message.topic == settings.privacy_topic:
            await handle_erasure(ErasureRequest.model_validate_json(message.value), position)
            return
        try:
            parsed = parse_event(message.value)
        except InvalidEvent as error:
            await dead_letter(message, str(error))
            return
        person_id = parsed.person_id
        if message.key != person_id.encode():
            # Produced under another key: move it to the partition that owns the person.
            await events_topic.send(key=person_id.encode(), value=message.value)
            return
        if erased.get(person_hash(person_id).encode()) is not None:
            metrics.dropped_erased.inc()
            return
        highwater = app.consumer.highwater(message.tp)
        caught_up = highwater is None or message.offset + 1 >= highwater
        if highwater is not None:
            metrics.lag.labels(topic=message.topic, partition=str(message.partition)).set(
                highwater - message.offset - 1
            )
        clock.observe(message.partition, parsed.timestamp, caught_up=caught_up)
        state = load_state(person_id)
        if state.merged_into is not None:
            # An anonymous id that now belongs to a known person: their events follow them.
            if not state.already_applied(position):
                save(state.model_copy(update={"applied_offsets": state.record(position)}), message.partition)
                document = {**orjson.loads(message.value), "userId": state.merged_into}
                await events_topic.send(key=state.merged_into.encode(), value=orjson.dumps(document))
            return
        step = apply_event(state, parsed, position, rules)
        if step.applied:
            metrics.events.labels(type=parsed.type, event=parsed.event or parsed.name or "").inc()
        await publish(step, message.partition)

    async def handle_erasure(request: ErasureRequest, position: SourcePosition) -> None:
        """Forget the person: tombstones in every table (and so their changelogs), a hash to drop late
        events, the same request for every anonymous id they absorbed, and an audit record."""
        hashed = person_hash(request.person_id)
        key = request.person_id.encode()
        if erased.get(hashed.encode()) is not None:
            return  # already done: a redelivered request
        stored = persons.get(key)
        cache.pop(key, None)
        changed_profiles.pop(key, None)
        if stored is not None:
            for anonymous_id in PersonState.model_validate_json(stored).profile.anonymous_ids:
                forwarded = request.model_copy(update={"person_id": anonymous_id})
                await privacy_topic.send(key=anonymous_id.encode(), value=forwarded.to_json())
            del persons[key]
        if deadlines.get(key) is not None:
            del deadlines[key]
        schedule.set(key, None, position.partition)
        erased[hashed.encode()] = utc_now().isoformat().encode()
        record = AuditRecord(
            request_id=request.request_id, kind="erase", person_hash=hashed, component="worker",
            completed_at=utc_now(), detail="profile, rule state and pending timers deleted",
        )  # fmt: skip
        await audit_topic.send(key=hashed.encode(), value=record.to_json())
        log.info("erased a person on request %s", request.request_id)

    async def handle_identity(document: dict[str, Any], position: SourcePosition) -> None:
        """link (keyed by the anonymous id): hand its state over; merge (keyed by the person): absorb it."""
        person_id = str(document["person_id"])
        if document["kind"] == "link":
            anonymous = load_state(str(document["anonymous_id"]))
            if anonymous.already_applied(position) or anonymous.merged_into is not None:
                return
            merge = {**document, "kind": "merge", "state": anonymous.model_dump(mode="json")}
            await identity_topic.send(key=person_id.encode(), value=orjson.dumps(merge))
            redirect = PersonState.new(anonymous.person_id).model_copy(
                update={"merged_into": person_id, "applied_offsets": anonymous.record(position)}
            )
            save(redirect, position.partition)
            log.info("identity: %s merges into %s", anonymous.person_id, person_id)
        elif document["kind"] == "merge":
            anonymous = PersonState.model_validate(document["state"])
            await publish(absorb(load_state(person_id), anonymous, position, rules), position.partition)

    @app.page("/profiles/{person_id}")
    @app.table_route(table=persons, match_info="person_id")
    async def profile_view(web: Any, request: Any, person_id: str) -> Any:
        # table_route answers from the worker that owns the person's partition (or forwards there).
        stored = persons.get(person_id.encode())
        if stored is None:
            return web.json({"error": f"no profile for {person_id}"}, status=404)
        state = PersonState.model_validate_json(stored)
        if state.merged_into is not None:
            return web.json({"person_id": person_id, "merged_into": state.merged_into}, status=404)
        return web.json(profile_document(state, utc_now(), rules))

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        metrics.pending_timers.set(len(schedule))
        metrics.profiles.set(len(persons))
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/segments/{name}/members")
    async def segment_members(web: Any, request: Any, name: str) -> Any:
        if name not in {segment.name for segment in rules.segments}:
            return web.json({"error": f"no segment named {name}"}, status=404)
        try:
            limit = max(1, min(1000, int(request.query.get("limit", "100"))))
        except ValueError:
            return web.json({"error": "limit must be a whole number"}, status=400)
        # Each worker knows the partitions it owns; with several workers, ask each and merge.
        members = [
            key.decode()
            for key, stored in persons.items()
            if stored and name in orjson.loads(stored).get("segments", {})
        ]
        page = segment_page(members, request.query.get("after"), limit)
        return web.json({**page, "segment": name})

    @app.timer(interval=settings.timer_interval_seconds)  # type: ignore[untyped-decorator]
    async def check_deadlines() -> None:
        # Ask the agent to re-check each person whose deadline passed on their partition's clock; the
        # agent decides. Until it saves the person again, ask again every CHECK_RETRY_SECONDS.
        for partition in schedule.partitions():
            now = clock.now(partition)
            if now is None:
                continue
            for key in schedule.pop_due(partition, now):
                schedule.set(key, now + timedelta(seconds=CHECK_RETRY_SECONDS), partition)
                body = orjson.dumps({"person_id": key.decode(), "now": now.isoformat()})
                await checks_topic.send(key=key, value=body, partition=partition)
        await publish_profile_snapshots()

    async def publish_profile_snapshots() -> None:
        # One snapshot per changed person per tick, not one per event: ClickHouse keeps the latest.
        pending = list(changed_profiles.items())
        changed_profiles.clear()
        for key, state in pending:
            await profiles_topic.send(key=key, value=state.profile.model_dump_json().encode())

    return app
