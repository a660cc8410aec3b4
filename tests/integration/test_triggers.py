"""Triggers through the real broker: exactly once across a SIGKILL, and a replay decides like the live run."""

from __future__ import annotations

import random
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from schemas.settings import Settings
from schemas.triggers import Trigger
from streams.broker.topics import ensure_topics
from streams.simulator.shoppers import interleaved_sessions
from streams.timers import utc_now
from tests.integration.conftest import RUNNERS, WorkerProcess, read_topic
from tests.integration.test_worker import event, identify, send

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("runner", RUNNERS, indirect=True)]

RULES = """
timers: {grace: 1s}
triggers:
  - name: cart_abandonment
    entry: {event: Product Added}
    key: cart_id
    delay: 5s
    restart_on_repeat: true
    exit: [{event: Order Completed, match: true}]
    channel: email
    template_id: cart
    variants: [{name: a, weight: 1}, {name: b, weight: 1}]
    holdout_percent: 10
    context: cart
  - name: browse_abandonment
    entry: {event: Product Viewed}
    key: product_id
    delay: 6s
    exit: [{event: Product Added, match: true}, {event: Order Completed, match: false}]
    channel: sms
    template_id: browse
    context: product
policy:
  caps:
    sms: [{count: 1, per: 1d}]
  quiet_hours: {}
"""


def rules_settings(settings: Settings, tmp_path: Path) -> Settings:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return settings.model_copy(update={"rules_file": path})


def outcomes(settings: Settings, until: Any, timeout: float = 60) -> tuple[list[Trigger], list[dict[str, Any]]]:
    sent = read_topic(settings.kafka_bootstrap, settings.triggers_topic, until, timeout)
    held = read_topic(settings.kafka_bootstrap, settings.suppressed_topic, lambda _: False, timeout=2)
    return [Trigger.model_validate_json(m.value) for m in sent], [orjson.loads(m.value) for m in held]


def test_every_due_trigger_comes_out_exactly_once_across_a_sigkill(
    settings: Settings, producer: KafkaProducer, tmp_path: Path
) -> None:
    settings = rules_settings(settings, tmp_path)
    people = [f"p{number:02d}" for number in range(30)]
    first = WorkerProcess(settings, tmp_path / "worker-1.log").start()
    try:
        for person in people:
            send(producer, settings, person, identify(person, utc_now()))
        for person in people:
            send(
                producer,
                settings,
                person,
                event("Product Added", person, utc_now(), product_id="sku-1", cart_id=person),
            )
            time.sleep(0.15)  # deadlines spread over several seconds, so the kill lands among them
        time.sleep(4)
    finally:
        first.stop(signal.SIGKILL)
    second = WorkerProcess(settings, tmp_path / "worker-2.log").start()
    try:
        sent, held = outcomes(settings, lambda m: len({orjson.loads(x.value)["triggerId"] for x in m}) >= 27)
        time.sleep(5)  # anything still to come, a duplicate included, shows up now
        sent, held = outcomes(settings, lambda _: False, timeout=3)
    finally:
        second.stop()
    cart = {t.trigger_id: t.person_id for t in sent if t.rule == "cart_abandonment"}
    held_out = {h["trigger"]["triggerId"]: h["trigger"]["personId"] for h in held if h["reason"] == "holdout"}
    assert sorted([*cart.values(), *held_out.values()]) == people  # every cart decided, none lost
    assert not set(cart) & set(held_out)
    # Redelivery after the kill may publish a trigger again: same trigger_id, so senders drop it.
    assert len(cart) == len(set(cart.values()))


def test_a_replay_of_recorded_traffic_decides_exactly_like_the_live_run(
    settings: Settings, producer: KafkaProducer, tmp_path: Path
) -> None:
    live = rules_settings(settings, tmp_path)
    worker = WorkerProcess(live, tmp_path / "live.log").start()
    try:
        for person in (f"shopper-{n:06d}" for n in range(40)):
            send(producer, live, person, identify(person, utc_now()))
        start = utc_now()
        began = time.monotonic()
        # Fifteen seconds of shopping, played in real time; sessions overlap as on a real site.
        for moment, document in interleaved_sessions(random.Random(7), 30, 40, start, timedelta(seconds=0.5)):
            wait = (moment - start).total_seconds() - (time.monotonic() - began)
            if wait > 0:
                time.sleep(wait)
            document = {**document, "timestamp": utc_now().isoformat()}
            producer.send(live.events_topic, key=document["userId"].encode(), value=orjson.dumps(document))
        producer.flush()
        time.sleep(12)  # every deadline (6s + 1s grace) has passed
        live_sent, live_held = outcomes(live, lambda _: False, timeout=3)
    finally:
        worker.stop()

    # The replay: the same messages, copied as recorded into a fresh pipeline that reads them as backlog.
    replay = live.model_copy(update={"namespace": live.namespace + "r", "data_dir": tmp_path / "replay"})
    ensure_topics(replay)
    recorded = read_topic(live.kafka_bootstrap, live.events_topic, lambda _: False, timeout=5)
    for message in recorded:
        producer.send(replay.events_topic, key=message.key, value=message.value, partition=message.partition)
    producer.flush()
    worker = WorkerProcess(replay, tmp_path / "replay.log").start()
    try:
        # Wait until the replay has decided as many nudges as the live run (sent and held back), then a
        # little longer for anything extra to show up.
        expected = len(live_sent) + len(live_held)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            replay_sent, replay_held = outcomes(replay, lambda _: False, timeout=2)
            if len(replay_sent) + len(replay_held) >= expected:
                break
        time.sleep(5)
        replay_sent, replay_held = outcomes(replay, lambda _: False, timeout=3)
    finally:
        worker.stop()

    def decided(sent: list[Trigger], held: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
        return {(t.trigger_id, t.rule, t.due_at, t.variant, "sent") for t in sent} | {
            (h["trigger"]["triggerId"], h["trigger"]["rule"], h["trigger"]["dueAt"][:19], h["reason"], "held")
            for h in held
        }

    assert len(live_sent) >= 5  # the traffic did abandon carts and products
    assert decided(replay_sent, replay_held) == decided(live_sent, live_held)
