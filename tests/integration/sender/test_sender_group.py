"""Two `nudgeflow send` processes in one consumer group: each nudge delivered once, by the SMTP server's
count, while one of them is killed and another joins; and a sender the group has moved on from (a
zombie, frozen past its session) delivers nothing when it wakes up."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from kafka import KafkaProducer

from schemas.deliveries import DeliveryState
from schemas.settings import Settings
from tests.integration.conftest import free_port
from tests.integration.sender.servers import SmtpServer
from tests.integration.sender.test_sender import (
    SenderProcess,
    latest_states,
    make_trigger,
    publish,
    sender_settings,
    wait_until,
)


def member(settings: Settings, log: Path) -> SenderProcess:
    """One more sender in the group, with a metrics port of its own."""
    web = settings.sender.model_copy(update={"web_port": free_port()})
    return SenderProcess(settings.model_copy(update={"sender": web}), log).start()


def test_two_senders_in_one_group_deliver_each_nudge_once_through_a_kill_and_a_join(
    settings: Settings, smtp: SmtpServer, producer: KafkaProducer, tmp_path: Path
) -> None:
    # Slow enough that both share the work for a while and the kill lands with sends in flight.
    configured = sender_settings(settings, smtp.port, smtp_per_second=25.0, smtp_connections=2)
    triggers = [make_trigger(number) for number in range(240)]
    publish(producer, configured, triggers)
    log = tmp_path / "senders.log"
    first = member(configured, log)
    second = member(configured, log)
    third: SenderProcess | None = None
    try:
        wait_until(lambda: smtp.mailbox.count() >= 60, 120, f"60 messages ({log.read_text()})")
        first.kill()  # its partitions go to the second once its session expires
        wait_until(lambda: smtp.mailbox.count() >= 140, 120, f"140 messages ({log.read_text()})")
        third = member(configured, log)  # a join: the partitions are shared out again
        wait_until(lambda: smtp.mailbox.count() >= len(triggers), 180, f"every message ({log.read_text()})")
        states = latest_states(configured, len(triggers))
        time.sleep(2.0)  # anything sent twice would have arrived by now
    finally:
        for sender in (first, second, third):
            if sender is not None:
                sender.stop()
    received = smtp.mailbox.trigger_ids()
    assert set(received) == {trigger.trigger_id for trigger in triggers}
    assert [tid for tid, count in received.items() if count != 1] == []
    assert {record.state for record in states.values()} <= {DeliveryState.SENT, DeliveryState.COMMITTED}


def test_a_sender_the_group_moved_on_from_delivers_nothing_when_it_wakes(
    settings: Settings, smtp: SmtpServer, producer: KafkaProducer, tmp_path: Path
) -> None:
    configured = sender_settings(settings, smtp.port, smtp_connections=4)
    triggers = [make_trigger(number) for number in range(16)]
    log = tmp_path / "senders.log"
    smtp.mailbox.hold_recipients = True  # the zombie's sends stall before their commit
    zombie = member(configured, log)
    heir: SenderProcess | None = None
    try:
        publish(producer, configured, triggers)
        wait_until(lambda: smtp.mailbox.recipients_seen >= 4, 90, f"sends in flight ({log.read_text()})")
        assert zombie.process is not None
        zombie.process.send_signal(signal.SIGSTOP)  # frozen: no heartbeat, its session expires
        smtp.mailbox.hold_recipients = False  # its held recipients are answered, to a process that sleeps
        heir = member(configured, log)
        wait_until(lambda: smtp.mailbox.count() >= len(triggers), 120, f"every message by the heir ({log.read_text()})")
        zombie.process.send_signal(signal.SIGCONT)  # wakes with sends past RCPT and its partitions in mind
        time.sleep(8.0)  # what the zombie would send arrives by now
        received = smtp.mailbox.trigger_ids()
        assert set(received) == {trigger.trigger_id for trigger in triggers}
        assert [tid for tid, count in received.items() if count != 1] == []
        # It woke with sends past their commit and was stopped by the fence, not by luck.
        wait_until(lambda: "lost its partition" in log.read_text(), 60, f"the zombie fenced ({log.read_text()})")
    finally:
        if zombie.process is not None and zombie.process.poll() is None:
            zombie.process.send_signal(signal.SIGCONT)
        for sender in (zombie, heir):
            if sender is not None:
                sender.stop()
