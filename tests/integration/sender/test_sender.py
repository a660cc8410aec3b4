"""`nudgeflow send` against the real broker and a local SMTP server: each nudge delivered once through
SIGKILLs, hostile messages dead-lettered while the rest go out, expiry, retries and refusals."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from kafka import KafkaProducer

from schemas.deliveries import DeliveryRecord, DeliveryState
from schemas.settings import SenderSettings, Settings
from schemas.triggers import Channel, DeadLetter, Trigger
from sinks.sender.channels.smtp import SmtpChannel
from sinks.sender.loop import Sender
from sinks.sender.templates import Templates
from streams.timers import utc_now
from tests.integration.conftest import REPO, free_port, read_topic, settings_environment
from tests.integration.sender.servers import SmtpServer


def make_trigger(number: int, **changes: Any) -> Trigger:
    now = utc_now()
    fields: dict[str, Any] = {
        "trigger_id": f"{number:032x}",
        "rule": "cart_abandonment",
        "person_id": f"person-{number:05d}",
        "channel": Channel.EMAIL,
        "template_id": "cart_abandonment",
        "due_at": now,
        "fired_at": now,
        "address": f"person{number}@shop.example",
        "locale": "zh-CN" if number % 3 == 0 else "en-US",
        "expires_at": now + timedelta(hours=1),
        "context": {
            "cart_id": f"cart-{number}",
            "name": "Ada Lovelace",
            "value": 39.0,
            "items": [{"product_id": "sku-0006", "name": "Yoga mat", "price": 39.0, "quantity": 1}],
        },
    }
    return Trigger(**{**fields, **changes})


def publish(producer: KafkaProducer, settings: Settings, triggers: list[Trigger]) -> None:
    for trigger in triggers:
        producer.send(settings.triggers_topic, key=trigger.person_id.encode(), value=trigger.to_json())
    producer.flush()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer(free_port()) as server:
        yield server


def sender_settings(settings: Settings, smtp_port: int, **changes: Any) -> Settings:
    fields: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp_port,
        "smtp_security": "none",
        "from_email": "nudges@shop.example",
        "smtp_per_second": 1000.0,
        "retry_seconds": 0.05,
        "web_port": free_port(),
    }
    return settings.model_copy(update={"sender": SenderSettings(**{**fields, **changes})})


def latest_states(settings: Settings, expected: int, timeout: float = 30.0) -> dict[str, DeliveryRecord]:
    """The last ledger record of each trigger, once `expected` triggers have one in a final state."""
    states: dict[str, DeliveryRecord] = {}

    def enough(messages: list[Any]) -> bool:
        states.clear()
        for message in messages:
            record = DeliveryRecord.model_validate_json(message.value)
            states[record.trigger_id] = record
        return sum(record.final for record in states.values()) >= expected

    read_topic(settings.kafka_bootstrap, settings.deliveries_topic, enough, timeout=timeout)
    return states


def wait_until(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def assert_each_sent_once_or_left_committed(
    smtp: SmtpServer, states: dict[str, DeliveryRecord], triggers: list[Trigger], kills: int, connections: int
) -> None:
    """Never twice; and a trigger the server never got is one a kill caught between its `committed` record
    reaching the broker and the request's final piece (SMTP cannot tell whether it went: it is not sent
    again). Anything else missing (no record, `sending`) is a lost nudge."""
    received = smtp.mailbox.trigger_ids()
    assert [tid for tid, count in received.items() if count != 1] == []
    missing = sorted({trigger.trigger_id for trigger in triggers} - set(received))
    print(f"received {len(received)} of {len(triggers)}; left committed by the kills: {len(missing)}")
    assert [(tid, states[tid].state) for tid in missing if states[tid].state is not DeliveryState.COMMITTED] == []
    assert len(missing) <= kills * connections
    assert {record.state for record in states.values()} <= {DeliveryState.SENT, DeliveryState.COMMITTED}


class SenderProcess:
    def __init__(self, settings: Settings, log_path: Path) -> None:
        config = settings.sender
        self.environment = {
            **settings_environment(settings),
            "NUDGEFLOW_SENDER__SMTP_HOST": config.smtp_host,
            "NUDGEFLOW_SENDER__SMTP_PORT": str(config.smtp_port),
            "NUDGEFLOW_SENDER__SMTP_SECURITY": config.smtp_security,
            "NUDGEFLOW_SENDER__FROM_EMAIL": config.from_email or "",
            "NUDGEFLOW_SENDER__SMTP_PER_SECOND": str(config.smtp_per_second),
            "NUDGEFLOW_SENDER__SMTP_CONNECTIONS": str(config.smtp_connections),
            "NUDGEFLOW_SENDER__WEB_PORT": str(config.web_port),
        }
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SenderProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "send"],
                env=self.environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def test_every_nudge_is_delivered_exactly_once_through_two_sigkills(
    settings: Settings, smtp: SmtpServer, producer: KafkaProducer, tmp_path: Path
) -> None:
    # Slow enough that each kill lands with sends in flight, on several connections.
    configured = sender_settings(settings, smtp.port, smtp_per_second=60.0, smtp_connections=4)
    triggers = [make_trigger(number) for number in range(240)]
    publish(producer, configured, triggers)
    log = tmp_path / "sender.log"
    kills = 0
    for kill_at in (60, 140):
        sender = SenderProcess(configured, log).start()
        try:
            wait_until(lambda at=kill_at: smtp.mailbox.count() >= at, 90, f"{kill_at} messages ({log.read_text()})")
            sender.kill()
            kills += 1
        finally:
            sender.stop()
    sender = SenderProcess(configured, log).start()
    try:
        states = latest_states(configured, len(triggers), timeout=120)
        time.sleep(2.0)  # anything sent twice would have arrived by now
    finally:
        sender.stop()
    assert kills == 2
    # A kill with sends in flight leaves them `committed` (never sent again): no more than the connections.
    assert_each_sent_once_or_left_committed(smtp, states, triggers, kills, configured.sender.smtp_connections)
    first = smtp.mailbox.messages[0]
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert str(first["List-Unsubscribe"]).startswith("<http://127.0.0.1:8088/unsubscribe/")


def test_two_senders_share_the_triggers_and_one_killed_mid_run_sends_nothing_twice(
    settings: Settings, smtp: SmtpServer, producer: KafkaProducer, tmp_path: Path
) -> None:
    # The second sender joins mid-run (a rebalance hands it half the partitions), then the first is killed (the
    # second takes them all): each partition changes hands with sends in flight, and its ledger goes with it.
    first_settings = sender_settings(settings, smtp.port, smtp_per_second=60.0, smtp_connections=4)
    second_settings = sender_settings(settings, smtp.port, smtp_per_second=60.0, smtp_connections=4)
    triggers = [make_trigger(number) for number in range(240)]
    publish(producer, first_settings, triggers)
    first = SenderProcess(first_settings, tmp_path / "sender-1.log").start()
    second = SenderProcess(second_settings, tmp_path / "sender-2.log")

    def logs() -> str:
        return "\n".join(path.read_text()[-3000:] for path in tmp_path.glob("sender-*.log"))

    try:
        wait_until(lambda: smtp.mailbox.count() >= 60, 90, f"60 messages ({logs()})")
        second.start()
        wait_until(lambda: smtp.mailbox.count() >= 140, 90, f"140 messages ({logs()})")
        first.kill()
        states = latest_states(first_settings, len(triggers), timeout=120)
        time.sleep(2.0)  # anything sent twice would have arrived by now
        assert second.process is not None and second.process.poll() is None, logs()
    finally:
        first.stop()
        second.stop()
    assert_each_sent_once_or_left_committed(smtp, states, triggers, 1, first_settings.sender.smtp_connections)


class NewGroup(Sender):
    """A sender in a consumer group of its own: it reads the triggers topic from the beginning."""

    @property
    def group_id(self) -> str:
        return f"{self.settings.app_id}-sender-{id(self)}"


async def run_sender(
    settings: Settings, until: Callable[[], bool], within: float = 60.0, kind: type[Sender] = Sender
) -> Sender:
    sender = kind(settings, Templates(), SmtpChannel(settings.sender), None)
    task = asyncio.create_task(sender.run())
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline and not until() and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert not task.done(), f"the sender stopped: {task.exception() if task.done() else ''}"
        assert until(), "timed out"
        await asyncio.sleep(0.5)
    finally:
        sender.stop()
        await asyncio.wait_for(task, 60)
    return sender


async def test_hostile_messages_are_dead_lettered_and_every_good_nudge_still_goes_out(
    settings: Settings, smtp: SmtpServer, producer: KafkaProducer
) -> None:
    configured = sender_settings(settings, smtp.port)
    good = [make_trigger(number) for number in range(10)]
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    hostile = [
        b"not json at all",
        orjson.dumps({"trigger_id": "t", "rule": "r"}),  # fields missing
        orjson.dumps({**orjson.loads(good[0].to_json()), "channel": "pigeon"}),
        b'{"triggerId": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        orjson.dumps({**orjson.loads(make_trigger(90).to_json()), "triggerId": "x" * 10_000}),
    ]
    expired = make_trigger(91, expires_at=utc_now() - timedelta(minutes=1))
    stale = make_trigger(92, expires_at=None, fired_at=utc_now() - timedelta(days=3))
    no_address = make_trigger(93, address="not an address\r\nBcc: everyone@example.com")
    no_template = make_trigger(94, template_id="nothing_like_it")
    hostile_context = make_trigger(
        95,
        context={
            "cart_id": "c",
            "name": "<script>alert(1)</script>\r\nBcc: x@example.com",
            "items": [{"product_id": "p", "name": "<b>x</b>", "url": "javascript:alert(1)", "price": "free"}] * 500,
            "value": float("1e308"),
        },
    )
    for value in hostile:
        producer.send(configured.triggers_topic, key=b"hostile", value=value)
    producer.send(configured.triggers_topic, key=b"tombstone", value=None)
    publish(producer, configured, [*good[:5], expired, stale, no_address, no_template, hostile_context, *good[5:]])

    sender = await run_sender(configured, lambda: smtp.mailbox.count() >= 11)

    received = smtp.mailbox.trigger_ids()
    assert set(received) == {t.trigger_id for t in [*good, hostile_context]} and set(received.values()) == {1}
    letters = [
        DeadLetter.model_validate_json(m.value)
        for m in read_topic(configured.kafka_bootstrap, configured.dead_letter_topic, lambda ms: len(ms) >= 9)
    ]
    reasons = sorted(letter.reason.split(":")[0] for letter in letters)
    invalid = ["not a trigger"] * 4 + ["empty message (a tombstone?) on triggers"]
    invalid.append("trigger_id and person_id must be 1 to 256 characters")
    assert reasons == sorted([*invalid, "email", "email"]), [letter.reason for letter in letters]
    assert any("not an email address" in letter.reason for letter in letters)
    assert any("no template 'nothing_like_it'" in letter.reason for letter in letters)
    assert sender.metrics.invalid._value.get() == 6
    states = latest_states(configured, 15)
    assert states[expired.trigger_id].state is DeliveryState.EXPIRED
    assert states[stale.trigger_id].state is DeliveryState.EXPIRED and "stale" in states[stale.trigger_id].reason
    assert states[no_address.trigger_id].state is DeliveryState.FAILED
    # The hostile context is escaped in HTML, its link dropped, its header folded; nothing was injected.
    message = next(m for m in smtp.mailbox.messages if "00005f" in str(m["Message-ID"]))
    html = message.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html and "javascript:" not in html
    assert message["Bcc"] is None and all(m["Bcc"] is None for m in smtp.mailbox.messages)


async def test_refusals_are_retried_with_backoff_then_dead_lettered(
    settings: Settings, smtp: SmtpServer, producer: KafkaProducer
) -> None:
    configured = sender_settings(settings, smtp.port, max_attempts=3)
    tries: dict[str, int] = {}

    def answer(recipient: str) -> str | None:
        tries[recipient] = tries.get(recipient, 0) + 1
        if recipient.startswith("person1@"):
            return "451 4.3.0 try again later" if tries[recipient] < 3 else None  # third time lucky
        if recipient.startswith("person2@"):
            return "451 4.3.0 try again later"  # never
        if recipient.startswith("person3@"):
            return "550 5.1.1 no such user"  # permanent: tried once
        return None

    smtp.mailbox.answer = answer
    publish(producer, configured, [make_trigger(number) for number in range(1, 5)])
    sender = await run_sender(
        configured, lambda: smtp.mailbox.count() >= 2 and len(latest_states(configured, 4, 0.5)) >= 4
    )

    assert sorted(smtp.mailbox.trigger_ids()) == [f"{1:032x}", f"{4:032x}"]
    assert tries == {
        "person1@shop.example": 3,
        "person2@shop.example": 3,
        "person3@shop.example": 1,
        "person4@shop.example": 1,
    }
    states = latest_states(configured, 4)
    assert states[f"{1:032x}"].state is DeliveryState.SENT and states[f"{1:032x}"].attempt == 3
    assert (
        states[f"{2:032x}"].state is DeliveryState.FAILED and "gave up after 3 attempts" in states[f"{2:032x}"].reason
    )
    assert states[f"{3:032x}"].state is DeliveryState.FAILED and "550" in states[f"{3:032x}"].reason
    assert sender.metrics.retried.labels(provider="smtp")._value.get() == 4
    letters = read_topic(configured.kafka_bootstrap, configured.dead_letter_topic, lambda ms: len(ms) >= 2)
    assert sorted(DeadLetter.model_validate_json(m.value).offset >= 0 for m in letters) == [True, True]


async def test_a_replayed_trigger_is_not_sent_again_by_a_new_sender(
    settings: Settings, smtp: SmtpServer, producer: KafkaProducer
) -> None:
    configured = sender_settings(settings, smtp.port)
    triggers = [make_trigger(number) for number in range(6)]
    publish(producer, configured, triggers)
    await run_sender(configured, lambda: smtp.mailbox.count() >= 6)
    # The same triggers again (a replay, or the worker publishing after a crash), read by a new group
    # member that starts from the beginning: the ledger on the deliveries topic says they went.
    publish(producer, configured, [*triggers, make_trigger(6)])
    sender = await run_sender(configured, lambda: smtp.mailbox.count() >= 7, kind=NewGroup)
    assert set(smtp.mailbox.trigger_ids().values()) == {1} and len(smtp.mailbox.trigger_ids()) == 7
    assert sender.metrics.dropped.labels(reason="duplicate")._value.get() == 12  # both copies of each


async def test_a_rebalance_while_a_trigger_waits_for_a_free_slot_commits_before_that_trigger(
    settings: Settings, smtp: SmtpServer, producer: KafkaProducer
) -> None:
    # Every slot busy: the next trigger waits in `take`. A rebalance meanwhile commits the offsets of the
    # partitions given up; the position committed must not pass that trigger, or whoever owns the partition
    # next starts after it and the trigger is never sent.
    configured = sender_settings(settings, smtp.port, concurrency=1)
    sender = Sender(configured, Templates(), SmtpChannel(configured.sender), None)
    task = asyncio.create_task(sender.run())
    other = AIOKafkaConsumer(
        configured.triggers_topic,
        bootstrap_servers=configured.kafka_bootstrap,
        group_id=sender.group_id,
        enable_auto_commit=False,
    )
    try:
        await asyncio.wait_for(sender.ready.wait(), 60)
        await sender.slots.acquire()  # the one slot, as a long send would hold it
        publish(producer, configured, [make_trigger(1)])
        await wait_for_async(lambda: bool(sender.offsets.taken), 30, "the trigger to be taken")
        [(tp, taken)] = sender.offsets.taken.items()
        await other.start()  # a second member: the sender gives its partitions up, committing their offsets
        await wait_for_async(lambda: bool(other.assignment()), 60, "the rebalance")
        assert sender.consumer is not None
        assert await sender.consumer.committed(tp) in (None, taken - 1)
        await other.stop()
        sender.slots.release()
        await wait_for_async(lambda: smtp.mailbox.count() >= 1, 60, "the trigger to be sent")
    finally:
        sender.stop()
        await asyncio.wait_for(task, 60)
    assert list(smtp.mailbox.trigger_ids().values()) == [1]


async def wait_for_async(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
