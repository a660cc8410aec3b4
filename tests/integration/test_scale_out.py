"""Scale-out against the real broker: two workers in one consumer group losing a member, and a broker restart.

Both runs check the same two things at the end: each person's latest profile snapshot counts exactly the
events sent for them, and each person's cart reminder came out under one trigger id.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import KafkaError

from schemas.settings import Settings
from streams.timers import utc_now
from tests.integration.conftest import (
    API_AUTH,
    REPO,
    RUNNERS,
    Broker,
    WorkerProcess,
    free_port,
    read_topic,
    settings_environment,
)
from tests.integration.test_profiles import NO_REDIRECTS, get, profile_when
from tests.integration.test_worker import event, identify, send, triggers_of, with_rules

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("runner", RUNNERS, indirect=True)]

PEOPLE = 40
CART_DELAY = "6s"


def group_members(settings: Settings) -> int:
    """Members of the workers' consumer group once it is stable; 0 while it rebalances or does not exist."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap.split(","), client_id="scale-out-test")
    try:
        description: dict[str, Any] = admin.describe_groups([settings.app_id])[settings.app_id]
    except KafkaError:  # no coordinator yet: the offsets topic is still being created
        return 0
    finally:
        admin.close()
    if description.get("error") or description.get("group_state") != "Stable":
        return 0
    return len(description.get("members") or [])


def events_leaders_elected(settings: Settings) -> bool:
    """Whether every partition of the events topic has a leader: after a restart the broker answers well
    before it leads them again, and a loaded machine can take longer than a producer's timeout for that."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap.split(","), client_id="scale-out-test")
    except KafkaError:
        return False
    try:
        topics = admin.describe_topics([settings.events_topic])
    except KafkaError:
        return False
    finally:
        admin.close()
    partitions = [partition for topic in topics for partition in topic.get("partitions") or []]
    return bool(partitions) and all(partition.get("leader", -1) >= 0 for partition in partitions)


def wait_for_group(settings: Settings, members: int, workers: list[WorkerProcess], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not all(worker.alive() for worker in workers):
            break
        if group_members(settings) == members:
            return
        time.sleep(0.5)
    logs = "\n".join(worker.log()[-3000:] for worker in workers)
    raise AssertionError(f"the consumer group never had {members} stable members:\n{logs}")


def redirected(settings: Settings, person: str) -> bool:
    """Whether the worker on settings' port sends a request for `person` on to another worker."""
    request = urllib.request.Request(f"http://127.0.0.1:{settings.worker_web_port}/profiles/{person}", headers=API_AUTH)
    try:
        with NO_REDIRECTS.open(request, timeout=10):
            return False
    except urllib.error.HTTPError as error:
        return error.code == 307


def held_elsewhere(settings: Settings, person: str) -> bool:
    """Whether another worker than the one on settings' port holds `person`: the batched runner answers a 307
    to the owner; Faust's table_route forwards the request itself, and Faust's router names the owner."""
    if settings.runner == "batched":
        return redirected(settings, person)
    status, owner = get(settings, f"/router/persons/{person}/")
    return status == 200 and not str(owner).rstrip("/").endswith(f":{settings.worker_web_port}")


def nudgeflow_profile(settings: Settings, person: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "profile", person],
        env=settings_environment(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def shop(producer: KafkaProducer, settings: Settings, person: str, views: int) -> int:
    """A known person views a product `views` times and leaves it in a cart; returns the events sent."""
    send(producer, settings, person, identify(person, utc_now()))
    for _ in range(views):
        send(producer, settings, person, event("Product Viewed", person, utc_now(), product_id="sku-1"))
    cart = {"product_id": "sku-1", "name": "Trail shoes", "price": 119.0, "cart_id": f"cart-{person}"}
    send(producer, settings, person, event("Product Added", person, utc_now(), **cart))
    return 2 + views


def latest_profiles(settings: Settings, expected: dict[str, int], timeout: float = 60) -> dict[str, int]:
    """event_count of each person's newest snapshot on the profiles topic, read until every count is reached."""

    def counts(messages: list[Any]) -> dict[str, int]:
        latest: dict[str, int] = {}
        for message in sorted(messages, key=lambda m: (m.partition, m.offset)):
            latest[message.key.decode()] = orjson.loads(message.value)["event_count"]
        return latest

    messages = read_topic(settings.kafka_bootstrap, settings.profiles_topic, lambda m: counts(m) == expected, timeout)
    return counts(messages)


def cart_triggers(settings: Settings, people: int, timeout: float = 60) -> dict[str, set[str]]:
    """person -> the trigger ids of their cart reminders; read until `people` ids are out, then a while longer."""

    def distinct(messages: list[Any]) -> int:
        return len({orjson.loads(message.value)["triggerId"] for message in messages})

    read_topic(settings.kafka_bootstrap, settings.triggers_topic, lambda m: distinct(m) >= people, timeout)
    time.sleep(4)  # a duplicate under a second id, if the handover lost state, would show up by now
    messages = read_topic(settings.kafka_bootstrap, settings.triggers_topic, lambda _: False, timeout=3)
    ids: dict[str, set[str]] = {}
    for trigger in triggers_of(messages):
        assert trigger.rule == "cart_abandonment"
        ids.setdefault(trigger.person_id, set()).add(trigger.trigger_id)
    return ids


def assert_exact(settings: Settings, expected: dict[str, int], logs: Callable[[], str]) -> None:
    triggers = cart_triggers(settings, len(expected))
    profiles = latest_profiles(settings, expected)
    assert profiles == expected, f"profile counts differ:\n{logs()}"
    assert sorted(triggers) == sorted(expected), f"cart reminders missing or extra:\n{logs()}"
    assert {person: len(ids) for person, ids in triggers.items()} == dict.fromkeys(expected, 1)


def test_two_workers_share_the_group_and_one_leaving_loses_nothing(
    settings: Settings, producer: KafkaProducer, tmp_path: Path
) -> None:
    # Under Faust each worker also keeps a standby copy of the other's tables (the batched runner has none).
    # At info level, so that a failure shows each worker's partitions and rebalances.
    update = {"faust_standby_replicas": 1, "log_level": "info"}
    settings = with_rules(settings, tmp_path, delay=CART_DELAY).model_copy(update=update)
    # Same app id and topics, so one consumer group; a port and RocksDB directory each, as on two machines.
    other = settings.model_copy(update={"worker_web_port": free_port(), "data_dir": tmp_path / "second"})
    first = WorkerProcess(settings, tmp_path / "worker-1.log").start()
    second = WorkerProcess(other, tmp_path / "worker-2.log").start()
    workers = [first, second]

    def logs() -> str:
        return "\n".join(f"--- {w.log_path.name}\n{w.log()[-12000:]}" for w in workers)

    people = [f"shopper-{number:03d}" for number in range(PEOPLE)]
    expected: dict[str, int] = {}
    try:
        wait_for_group(settings, 2, workers)
        for number, person in enumerate(people[: PEOPLE // 2]):
            expected[person] = shop(producer, settings, person, views=number % 3)
        time.sleep(2)  # the first half's deadlines are pending on both workers when one of them leaves
        # Either worker answers for anyone: a person owned by the other worker is forwarded there.
        for asked in (settings, other):
            for person in people[:6]:
                try:
                    document = profile_when(asked, person, lambda d: True)
                except AssertionError as error:
                    raise AssertionError(f"{error}\n{logs()}") from None
                assert document["profile"]["person_id"] == person
                assert get(asked, f"/profiles/{person}", token=None)[0] == 401  # and never without the token
        elsewhere = next(p for p in people[:6] if held_elsewhere(other, p))
        profile = nudgeflow_profile(other, elsewhere)
        assert profile.returncode == 0, profile.stderr  # the CLI's token reached the owner
        assert orjson.loads(profile.stdout)["profile"]["person_id"] == elsewhere
        second.stop(signal.SIGTERM)
        assert second.process is not None and second.process.returncode is not None
        for number, person in enumerate(people[PEOPLE // 2 :]):
            expected[person] = shop(producer, settings, person, views=number % 3)
            time.sleep(0.05)  # traffic goes on while the group rebalances onto the survivor
        assert_exact(settings, expected, logs)
        assert first.alive(), logs()
    finally:
        for worker in workers:
            worker.stop()


def test_the_worker_rides_out_a_broker_restart_without_losing_an_event(
    broker: Broker, settings: Settings, producer: KafkaProducer, tmp_path: Path
) -> None:
    settings = with_rules(settings, tmp_path, delay=CART_DELAY)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    people = [f"shopper-{number:03d}" for number in range(PEOPLE)]
    expected: dict[str, int] = {}
    stopped = False
    try:
        wait_for_group(settings, 1, [worker])
        for number, person in enumerate(people[: PEOPLE // 2]):
            expected[person] = shop(producer, settings, person, views=number % 3)
        time.sleep(1)
        # The first half's deadlines fall due while the broker is away.
        result = broker.kafka("stop")
        stopped = True
        assert result.returncode == 0, result.stderr
        time.sleep(8)
        result = broker.kafka("start")
        assert result.returncode == 0, result.stderr
        stopped = False
        deadline = time.monotonic() + 180
        while not events_leaders_elected(settings) and time.monotonic() < deadline:
            time.sleep(0.5)
        for number, person in enumerate(people[PEOPLE // 2 :]):
            expected[person] = shop(producer, settings, person, views=number % 3)
        assert_exact(settings, expected, worker.log)
        assert worker.alive(), worker.log()
    finally:
        if stopped:
            broker.kafka("start")  # later tests share this broker
        worker.stop()
