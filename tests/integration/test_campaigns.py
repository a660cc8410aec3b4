"""Campaigns through the real broker, scheduled and cancelled with `nudgeflow campaign`: each member once at
their own local moment, not a non-member, an opted-out member suppressed with the reason, one trigger id
across a SIGKILL and restart, and a cancel that stops what has not gone out."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from kafka import KafkaProducer

from schemas.settings import Settings
from schemas.triggers import DeadLetter, Suppression, Trigger
from streams.rules.person import PersonState
from streams.timers import utc_now
from tests.integration.conftest import REPO, RUNNERS, WorkerProcess, read_topic, settings_environment
from tests.integration.test_worker import send, wait_until_processed

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("runner", RUNNERS, indirect=True)]

RULES = """
segments:
  - name: subscribers
    all: [{fact: has_email, op: "==", value: true}]
policy: {caps: {}, quiet_hours: {}}
"""
SHANGHAI, BERLIN = ZoneInfo("Asia/Shanghai"), ZoneInfo("Europe/Berlin")


def with_rules(settings: Settings, tmp_path: Path) -> Settings:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return settings.model_copy(update={"rules_file": path})


def campaign_cli(settings: Settings, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "campaign", *arguments],
        env=settings_environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def person(producer: KafkaProducer, settings: Settings, person_id: str, zone: ZoneInfo, **traits: Any) -> None:
    document = {
        "type": "identify",
        "userId": person_id,
        "messageId": str(uuid.uuid4()),
        "timestamp": utc_now().isoformat(),
        "traits": {"timezone": str(zone), **traits},
    }
    send(producer, settings, person_id, orjson.dumps(document))


def campaign_file(tmp_path: Path, name: str, when: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"id: {name}\naudience: {{segments: [subscribers]}}\nwhen: {when}\nchannel: email\ntemplate_id: {name}\n"
    )
    return path


def sent(settings: Settings, until: Any, timeout: float = 60) -> list[Trigger]:
    messages = read_topic(settings.kafka_bootstrap, settings.triggers_topic, until, timeout)
    return [Trigger.model_validate_json(message.value) for message in messages]


def suppressed(settings: Settings, until: Any, timeout: float = 60) -> list[Suppression]:
    messages = read_topic(settings.kafka_bootstrap, settings.suppressed_topic, until, timeout)
    return [Suppression.model_validate_json(message.value) for message in messages]


def stored_states(settings: Settings, timeout: float = 3, until: Any = None) -> dict[str, PersonState]:
    """The latest stored state of each person (the persons changelog), read until `until(states)` holds."""
    states: dict[str, PersonState] = {}
    seen = [0]

    def done(records: list[Any]) -> bool:
        for record in records[seen[0] :]:
            if record.value is not None:
                states[record.key.decode()] = PersonState.from_json(record.value)
        seen[0] = len(records)
        return until is not None and bool(until(states))

    read_topic(settings.kafka_bootstrap, settings.changelog_topic("persons"), done, timeout)
    return states


def waiting(state: PersonState | None) -> list[tuple[str, datetime]]:
    return [] if state is None else [(each.rule, each.due_at) for each in state.pending.values()]


def test_a_campaign_reaches_each_member_once_at_their_local_moment_across_restarts(
    settings: Settings, producer: KafkaProducer, tmp_path: Path
) -> None:
    settings = with_rules(settings, tmp_path)
    first = WorkerProcess(settings, tmp_path / "worker-1.log").start()
    try:
        person(producer, settings, "ana", SHANGHAI, email="ana@example.com")
        person(producer, settings, "cy", SHANGHAI, email="cy@example.com", email_consent="opted_out")
        person(producer, settings, "bo", SHANGHAI, name="Bo")  # no address: not a subscriber
        person(producer, settings, "di", BERLIN, email="di@example.com")
        for name in ("ana", "cy", "bo", "di"):
            wait_until_processed(first, name)
        # 10:00 on a date, wherever they are: here a wall time some seconds ahead in Shanghai, which comes
        # seven hours later in Berlin.
        moment = (utc_now() + timedelta(seconds=15)).astimezone(SHANGHAI).replace(microsecond=0)
        when = f'{{day: {moment.date().isoformat()}, local_time: "{moment.time().isoformat()}"}}'
        scheduled = campaign_cli(settings, "schedule", str(campaign_file(tmp_path, "hello", when)))
        assert scheduled.returncode == 0, scheduled.stderr
        # Someone who joins the segment after the campaign was scheduled waits for it too.
        person(producer, settings, "eve", SHANGHAI, email="eve@example.com")
        berlin = datetime.combine(moment.date(), moment.time(), tzinfo=BERLIN)
        expected = {"ana": moment, "eve": moment, "cy": moment, "bo": moment, "di": berlin}
        states = stored_states(
            settings,
            60,
            lambda states: all(
                waiting(states.get(name)) == [("campaign:hello", due)] for name, due in expected.items()
            ),
        )
        assert {name: waiting(states.get(name)) for name in expected} == {
            name: [("campaign:hello", due)] for name, due in expected.items()
        }, first.log()
        assert utc_now() < moment, "the deadlines were stored too late to show a restart before the moment"
    finally:
        first.stop(signal.SIGKILL)
    # The next worker knows the campaign before it fires anyone's deadline.
    second = WorkerProcess(settings, tmp_path / "worker-2.log").start()
    try:
        first_sent = sent(settings, lambda messages: len(messages) >= 2)
        assert sorted(trigger.person_id for trigger in first_sent) == ["ana", "eve"], second.log()
        assert {trigger.rule for trigger in first_sent} == {"campaign:hello"}
        for trigger in first_sent:
            assert trigger.due_at == moment and trigger.fired_at >= moment
        opted_out = suppressed(settings, lambda messages: len(messages) >= 1)
        assert [(each.trigger.person_id, each.reason.value) for each in opted_out] == [("cy", "opted_out")]
    finally:
        second.stop(signal.SIGKILL)  # the checkpoint after the sends may not have been written
    third = WorkerProcess(settings, tmp_path / "worker-3.log").start()
    try:
        person(producer, settings, "zed", SHANGHAI, name="Zed")
        wait_until_processed(third, "zed")  # the third worker has read everything before zed
        time.sleep(2)
        again = sent(settings, lambda _: False, timeout=3)
    finally:
        third.stop()
    ids = {trigger.trigger_id: trigger.person_id for trigger in again}
    assert sorted(ids.values()) == ["ana", "eve"]  # a replay may publish one again, under the same id
    assert waiting(stored_states(settings)["di"]) == [("campaign:hello", berlin)]  # still waiting for 10:00 there
    listed = campaign_cli(settings, "list")
    assert listed.returncode == 0 and listed.stdout.startswith("hello\tscheduled\t"), listed.stderr


def test_cancel_stops_what_has_not_gone_out_and_a_bad_control_message_is_dead_lettered(
    settings: Settings, producer: KafkaProducer, tmp_path: Path
) -> None:
    settings = with_rules(settings, tmp_path)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        person(producer, settings, "ana", SHANGHAI, email="ana@example.com")
        wait_until_processed(worker, "ana")
        producer.send(settings.campaigns_topic, key=b"junk", value=b"{not json").get(timeout=30)
        # Far enough ahead for three commands to run on a loaded machine before it comes.
        moment = (utc_now() + timedelta(seconds=15)).replace(microsecond=0)
        path = campaign_file(tmp_path, "sale", f'{{at: "{moment.isoformat()}"}}')
        assert campaign_cli(settings, "schedule", str(path)).returncode == 0
        again = campaign_cli(settings, "schedule", str(path))
        assert again.returncode == 1 and "already scheduled" in again.stderr
        cancelled = campaign_cli(settings, "cancel", "sale")
        assert cancelled.returncode == 0, cancelled.stderr
        assert utc_now() < moment, "cancelled too late to show anything"
        held = suppressed(settings, lambda messages: len(messages) >= 1)
        assert [(each.trigger.person_id, each.reason.value) for each in held] == [("ana", "cancelled")], worker.log()
        letters = read_topic(settings.kafka_bootstrap, settings.dead_letter_topic, lambda m: len(m) >= 1)
        (letter,) = [DeadLetter.model_validate_json(message.value) for message in letters]
        assert (letter.topic, letter.key, letter.reason.split(":")[0]) == (settings.campaigns_topic, "junk", "not JSON")
    finally:
        worker.stop()
    assert sent(settings, lambda _: False, timeout=3) == []
    listed = campaign_cli(settings, "list")
    assert listed.stdout.startswith("sale\tcancelled\t"), listed.stderr
