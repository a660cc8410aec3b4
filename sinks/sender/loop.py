"""The consumer loop of `nudgeflow send`: triggers in, each rendered and sent once, the ledger kept.

One consumer group on the triggers topic. Every trigger is looked up in the ledger first, then dropped
(already done, expired, stale), dead-lettered (unreadable, no template, no address, no provider) or sent
by a task of its own, at most `concurrency` at once, each provider held to its rate. Offsets are
committed up to the oldest trigger still in progress, every second and on a rebalance, so a restart goes
over at most what was in flight, and the ledger tells what of that was done.

On a rebalance the partitions given away stop at once: their sends that had not committed are cancelled
(the provider holds an unfinished request and drops it), the committed ones finish, the ledger is
flushed and the offsets committed before the new owner reads the ledger; on an assignment the ledger of
the new partitions is read to its end before their first trigger is looked at.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from pydantic import ValidationError

from schemas.connections import aiokafka_options
from schemas.deliveries import DeliveryRecord, DeliveryState
from schemas.settings import Settings
from schemas.triggers import Channel, DeadLetter, Trigger
from sinks.sender.channels import Accepted, EmailChannel, ProviderError, SmsChannel, Unconfirmed
from sinks.sender.ledger import Ledger
from sinks.sender.messages import OutgoingEmail, OutgoingSms, Undeliverable, compose
from sinks.sender.metrics import SenderMetrics
from sinks.sender.ratelimit import RateLimiter
from sinks.sender.templates import TemplateFailure, Templates

log = logging.getLogger(__name__)

COMMIT_EVERY_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 300.0
STOP_GRACE_SECONDS = 30.0


def utc_now() -> datetime:
    """The current moment, in UTC."""
    from datetime import UTC

    return datetime.now(UTC)


class Aborted(Exception):
    """The partition of a send was given away before it committed: the new owner sends it."""


@dataclass(eq=False)
class Job:
    """One trigger the sender is delivering, and where it was read."""

    trigger: Trigger
    tp: TopicPartition
    offset: int
    committing: bool = False
    task: asyncio.Task[None] | None = None


@dataclass
class Offsets:
    """Per partition: offsets in progress, and one past the highest offset taken."""

    pending: dict[TopicPartition, set[int]] = field(default_factory=dict)
    taken: dict[TopicPartition, int] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)

    def take(self, tp: TopicPartition, offset: int) -> None:
        self.taken[tp] = max(self.taken.get(tp, 0), offset + 1)

    def start(self, tp: TopicPartition, offset: int) -> None:
        self.pending.setdefault(tp, set()).add(offset)
        self.take(tp, offset)

    def done(self, tp: TopicPartition, offset: int) -> None:
        self.pending.get(tp, set()).discard(offset)

    def positions(self) -> dict[TopicPartition, int]:
        """What may be committed now: up to the oldest offset in progress, where it changed."""
        moved = {}
        for tp, taken in self.taken.items():
            pending = self.pending.get(tp)
            position = min(pending) if pending else taken
            if position > self.committed.get(tp, -1):
                moved[tp] = position
        return moved

    def drop(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.pending.pop(tp, None)
            self.taken.pop(tp, None)
            self.committed.pop(tp, None)


class Sender:
    """The sender: reads triggers, renders each nudge and delivers it once through its channel."""

    def __init__(
        self,
        settings: Settings,
        templates: Templates,
        email: EmailChannel | None,
        sms: SmsChannel | None,
        metrics: SenderMetrics | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.templates = templates
        self.channels: dict[Channel, EmailChannel | SmsChannel | None] = {Channel.EMAIL: email, Channel.SMS: sms}
        self.metrics = metrics or SenderMetrics()
        self.clock = clock
        config = settings.sender
        rates = {
            "smtp": config.smtp_per_second,
            "sendgrid": config.sendgrid_per_second,
            "twilio": config.twilio_per_second,
        }
        self.limiters = {
            channel.provider: RateLimiter(rates.get(channel.provider, 10.0))
            for channel in (email, sms)
            if channel is not None
        }
        self.slots = asyncio.Semaphore(config.concurrency)
        self.jobs: dict[str, Job] = {}  # trigger_id -> the send in progress
        self.held: set[TopicPartition] = set()
        self.offsets = Offsets()
        self.stopping = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.ledger: Ledger | None = None
        self.ready = asyncio.Event()  # set once partitions were assigned and their ledger read

    @property
    def group_id(self) -> str:
        return f"{self.settings.app_id}-sender"

    def stop(self) -> None:
        self.stopping.set()

    # --- the loop ------------------------------------------------------------------------------------

    async def run(self) -> None:
        settings = self.settings
        self.producer = AIOKafkaProducer(
            **aiokafka_options(settings),
            acks="all",
            enable_idempotence=True,  # keeps one trigger's records in the order they were sent
            linger_ms=1,
            client_id=f"{settings.app_id}-sender",
        )
        await self.producer.start()
        self.ledger = Ledger(settings, self.producer)
        self.consumer = AIOKafkaConsumer(
            **aiokafka_options(settings),
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{settings.app_id}-sender",
            max_poll_records=max(16, settings.sender.concurrency * 4),
        )
        try:
            await self.ledger.start()
            await self.consumer.start()
            self.consumer.subscribe([settings.triggers_topic], listener=_Rebalance(self))
            committed_at = time.monotonic()
            while not self.stopping.is_set():
                batch = await self.consumer.getmany(timeout_ms=200)
                for tp, messages in batch.items():
                    for message in messages:
                        if not await self.take(tp, message):
                            self._refetch(tp, message.offset)
                            break
                if time.monotonic() - committed_at >= COMMIT_EVERY_SECONDS:
                    await self.commit_offsets()
                    committed_at = time.monotonic()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        # Sends not committed yet are left to the next run (the provider drops them unfinished).
        await self.release(set(self.held))
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        for channel in self.channels.values():
            if channel is not None:
                await channel.close()

    async def commit_offsets(self, only: set[TopicPartition] | None = None) -> None:
        assert self.consumer is not None
        positions = {
            tp: position
            for tp, position in self.offsets.positions().items()
            if tp in self.held or (only is not None and tp in only)
        }
        if only is not None:
            positions = {tp: position for tp, position in positions.items() if tp in only}
        if not positions:
            return
        try:
            await self.consumer.commit({tp: OffsetAndMetadata(position, "") for tp, position in positions.items()})
            self.offsets.committed.update(positions)
        except Exception as error:  # a rebalance under way; the ledger keeps what is replayed from sending twice
            log.warning("sender: offsets not committed (%s); triggers since then will be looked up again", error)

    def _refetch(self, tp: TopicPartition, offset: int) -> None:
        """Fetch from `offset` again: records can arrive before the ledger of their partition is read."""
        assert self.consumer is not None
        with contextlib.suppress(Exception):  # given away meanwhile: the new owner reads it
            self.consumer.seek(tp, offset)

    async def take(self, tp: TopicPartition, message: ConsumerRecord) -> bool:
        """Decide about one trigger message (a send gets a task of its own); False when its partition is not
        held (yet), so the message is fetched again."""
        if tp not in self.held:
            return False
        # In progress from here until decided: what follows awaits (the ledger, a free slot), and a rebalance
        # committing meanwhile must stop before this offset, or the new owner would start past it.
        self.offsets.start(tp, message.offset)
        sending = False
        try:
            sending = await self._decide(tp, message)
        finally:
            if not sending:
                self.offsets.done(tp, message.offset)
        return sending or tp in self.held

    async def _decide(self, tp: TopicPartition, message: ConsumerRecord) -> bool:
        """True once a task sends the trigger (it marks the offset done); False when nothing is to be sent."""
        trigger = await self._read(tp, message)
        if trigger is None:
            return False
        assert self.ledger is not None
        now = self.clock()
        running = self.jobs.get(trigger.trigger_id)
        if self.ledger.final(trigger.trigger_id) or running is not None:
            self.metrics.dropped.labels(reason="duplicate").inc()
            # The same record fetched again while its send runs: that task still marks the offset done.
            return running is not None and (running.tp, running.offset) == (tp, message.offset)
        if trigger.expires_at is not None and trigger.expires_at <= now:
            await self._drop(trigger, tp, f"expired at {trigger.expires_at.isoformat()} before it could be sent")
            return False
        stale = timedelta(hours=self.settings.sender.stale_after_hours)
        if trigger.expires_at is None and trigger.fired_at < now - stale:
            await self._drop(trigger, tp, f"stale: fired at {trigger.fired_at.isoformat()}, more than {stale} ago")
            return False
        await self.slots.acquire()
        if tp not in self.held:  # given away while every slot was busy
            self.slots.release()
            return False
        job = Job(trigger, tp, message.offset)
        self.offsets.start(tp, message.offset)  # again: a rebalance that gave the partition back dropped it
        self.jobs[trigger.trigger_id] = job
        self.metrics.in_flight.inc()
        job.task = asyncio.create_task(self._deliver(job))
        return True

    async def _read(self, tp: TopicPartition, message: ConsumerRecord) -> Trigger | None:
        """The trigger, or None once the message is dead-lettered with the reason."""
        if message.value is None:
            await self._dead_letter(tp, message.offset, message.key, b"", "empty message (a tombstone?) on triggers")
            return None
        try:
            trigger = Trigger.model_validate_json(message.value)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first.get("loc", ())) or "message"
            reason = f"not a trigger: {where}: {first.get('msg')} ({error.error_count()} errors)"
            await self._dead_letter(tp, message.offset, message.key, message.value, reason)
            return None
        limit = self.settings.limits.id_length
        if not trigger.trigger_id or len(trigger.trigger_id) > limit or len(trigger.person_id) > limit:
            reason = f"trigger_id and person_id must be 1 to {limit} characters"
            await self._dead_letter(tp, message.offset, message.key, message.value, reason)
            return None
        return trigger

    async def _drop(self, trigger: Trigger, tp: TopicPartition, reason: str) -> None:
        assert self.ledger is not None
        self.metrics.dropped.labels(reason=reason.split(":")[0].split(" ")[0]).inc()
        await self.ledger.write(self._record(trigger, DeliveryState.EXPIRED, reason=reason), tp.partition)

    def _record(self, trigger: Trigger, state: DeliveryState, **fields: object) -> DeliveryRecord:
        channel = self.channels.get(trigger.channel)
        return DeliveryRecord(
            trigger_id=trigger.trigger_id,
            state=state,
            rule=trigger.rule,
            channel=trigger.channel,
            provider=channel.provider if channel is not None else "",
            at=self.clock(),
            **fields,
        )

    async def _dead_letter(
        self, tp: TopicPartition, offset: int, key: bytes | None, value: bytes, reason: str, invalid: bool = True
    ) -> None:
        assert self.producer is not None
        if invalid:
            self.metrics.invalid.inc()
        kept = value[: self.settings.limits.dead_letter_bytes].decode(errors="replace")
        letter = DeadLetter(
            reason=reason[:2000],
            topic=tp.topic,
            partition=tp.partition,
            offset=offset,
            key=key.decode(errors="replace")[: self.settings.limits.id_length] if key else None,
            value=kept,
            received_at=self.clock(),
        )
        log.warning("sender: %s/%d@%d dead-lettered: %s", tp.topic, tp.partition, offset, reason)
        await self.producer.send(self.settings.dead_letter_topic, value=letter.model_dump_json().encode(), key=key)

    async def _fail(self, job: Job, attempt: int, provider: str, kind: str, reason: str) -> None:
        assert self.ledger is not None
        trigger = job.trigger
        self.metrics.failed.labels(provider=provider or "none", reason=kind).inc()
        await self.ledger.write(
            self._record(trigger, DeliveryState.FAILED, attempt=attempt, reason=reason), job.tp.partition
        )
        await self._dead_letter(
            job.tp,
            job.offset,
            trigger.person_id.encode(),
            trigger.to_json(),
            f"{trigger.channel.value}: {reason}",
            invalid=False,
        )

    # --- one send ------------------------------------------------------------------------------------

    async def _deliver(self, job: Job) -> None:
        finished = False
        try:
            await self._attempts(job)
            finished = True
        except Aborted:
            pass
        except Exception:  # a bug must not stop the loop: logged, and the trigger is left to a later run
            log.exception("sender: trigger %s failed unexpectedly", job.trigger.trigger_id)
        finally:
            self.jobs.pop(job.trigger.trigger_id, None)
            self.metrics.in_flight.dec()
            self.slots.release()
            if finished:
                self.offsets.done(job.tp, job.offset)

    async def _attempts(self, job: Job) -> None:
        assert self.ledger is not None
        trigger = job.trigger
        channel = self.channels.get(trigger.channel)
        first = self.ledger.next_attempt(trigger.trigger_id)
        if channel is None:
            variable = (
                "NUDGEFLOW_SENDER__EMAIL_PROVIDER and its settings"
                if trigger.channel is Channel.EMAIL
                else (
                    "NUDGEFLOW_SENDER__TWILIO_ACCOUNT_SID, NUDGEFLOW_SENDER__TWILIO_FROM_NUMBER and "
                    "NUDGEFLOW_TWILIO_AUTH_TOKEN"
                )
            )
            await self._fail(
                job, first, "", "unconfigured", f"no {trigger.channel.value} provider configured: set {variable}"
            )
            return
        try:
            message = compose(self.settings, self.templates, trigger, self.clock())
        except TemplateFailure as failure:
            await self._fail(job, first, channel.provider, "template", f"template {failure}")
            return
        except Undeliverable as error:
            await self._fail(job, first, channel.provider, "address", str(error))
            return
        limiter = self.limiters[channel.provider]
        attempt = first
        while True:
            if attempt > self.settings.sender.max_attempts:  # used up by earlier runs that stopped midway
                record = self.ledger.get(trigger.trigger_id)
                last = record.reason if record is not None else "no attempt left"
                reason = f"gave up after {attempt - 1} attempts: {last}"
                await self._fail(job, attempt - 1, channel.provider, "attempts", reason)
                return
            await limiter.acquire()
            if job.tp not in self.held:
                raise Aborted
            await self.ledger.write(self._record(trigger, DeliveryState.SENDING, attempt=attempt), job.tp.partition)
            started = time.perf_counter()

            async def commit(attempt: int = attempt) -> None:
                assert self.ledger is not None
                if job.tp not in self.held or job.committing:
                    raise Aborted
                job.committing = True
                record = self._record(trigger, DeliveryState.COMMITTED, attempt=attempt)
                try:
                    await self.ledger.write(record, job.tp.partition, wait=True)
                except Exception as error:
                    job.committing = False
                    raise ProviderError(f"the ledger did not take the commit: {error}", retryable=True) from None

            try:
                accepted = await _send(channel, message, commit)
            except Unconfirmed as unknown:
                self.metrics.failed.labels(provider=channel.provider, reason="unconfirmed").inc()
                await self.ledger.write(
                    self._record(trigger, DeliveryState.UNCONFIRMED, attempt=attempt, reason=str(unknown)),
                    job.tp.partition,
                )
                log.warning("sender: %s committed but unconfirmed, not resent: %s", trigger.trigger_id, unknown)
                return
            except ProviderError as refusal:
                job.committing = False
                if not refusal.retryable:
                    await self._fail(job, attempt, channel.provider, "refused", refusal.reason)
                    return
                if attempt >= self.settings.sender.max_attempts:
                    reason = f"gave up after {attempt} attempts: {refusal.reason}"
                    await self._fail(job, attempt, channel.provider, "attempts", reason)
                    return
                if job.tp not in self.held:
                    raise Aborted from None
                self.metrics.retried.labels(provider=channel.provider).inc()
                await self.ledger.write(
                    self._record(trigger, DeliveryState.RETRYING, attempt=attempt, reason=refusal.reason),
                    job.tp.partition,
                )
                await asyncio.sleep(self.backoff(attempt, refusal.retry_after))
                attempt += 1
                continue
            self.metrics.latency.labels(provider=channel.provider).observe(time.perf_counter() - started)
            self.metrics.delay.labels(channel=trigger.channel.value).observe(
                max(0.0, (self.clock() - trigger.fired_at).total_seconds())
            )
            self.metrics.sent.labels(channel=trigger.channel.value, provider=channel.provider).inc()
            await self.ledger.write(
                self._record(
                    trigger, DeliveryState.SENT, attempt=attempt, provider_message_id=accepted.provider_message_id
                ),
                job.tp.partition,
            )
            return

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        base = self.settings.sender.retry_seconds * 2 ** (attempt - 1)
        wait = min(MAX_BACKOFF_SECONDS, base) * random.uniform(0.8, 1.2)  # apart, so retries do not stampede
        return float(max(wait, retry_after or 0.0))

    # --- rebalances ----------------------------------------------------------------------------------

    async def release(self, partitions: set[TopicPartition], grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop the sends of these partitions (the committed ones finish), flush the ledger, commit offsets."""
        self.held -= partitions
        leaving = [job for job in self.jobs.values() if job.tp in partitions and job.task is not None]
        for job in leaving:
            if not job.committing and job.task is not None:
                job.task.cancel()
        tasks = [job.task for job in leaving if job.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await self.producer.flush()
        if self.consumer is not None and partitions:
            await self.commit_offsets(only=partitions)
        self.offsets.drop(partitions)

    async def assign(self, partitions: set[TopicPartition], previous: set[TopicPartition]) -> None:
        assert self.ledger is not None
        numbers = {tp.partition for tp in partitions}
        self.ledger.forget({tp.partition for tp in previous - partitions}, keep=numbers)
        started = time.monotonic()
        read = await self.ledger.restore(numbers)
        self.metrics.ledger_size.set(len(self.ledger.entries))
        self.held = set(partitions)
        if read:
            log.info(
                "sender: ledger of %d partitions read (%d records, %.1fs)",
                len(numbers),
                read,
                time.monotonic() - started,
            )
        self.ready.set()


async def _send(channel: EmailChannel | SmsChannel, message: OutgoingEmail | OutgoingSms, commit: object) -> Accepted:
    # The channel of a trigger's channel gets that kind of message (compose follows trigger.channel).
    return await channel.send(message, commit)  # type: ignore[arg-type]


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.previous: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.previous = set(revoked)
        await self.sender.release(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.sender.assign(set(assigned), self.previous)
