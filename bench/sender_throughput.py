"""Nudges rendered and delivered per second by the sender into a local aiosmtpd server, beside a bare SMTP
client (smtplib, the same rendered messages) in the same run.

The sender's figure includes everything it does per nudge: reading the trigger from Kafka, the ledger
lookup, rendering both parts from the templates, the MIME message, the rate limiter, and three ledger
records on the deliveries topic, one of them (the commit) waited for before the message's last line.

Run: .venv/bin/python bench/sender_throughput.py [--messages 3000] [--connections 4]
"""

from __future__ import annotations

import argparse
import asyncio
import smtplib
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from kafka import KafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._harness import free_port, install_signal_handlers, print_table, running_broker, scratch_directory
from schemas.settings import SenderSettings, Settings
from schemas.triggers import Channel, Trigger
from sinks.sender.channels.smtp import SmtpChannel
from sinks.sender.loop import Sender
from sinks.sender.messages import OutgoingEmail, compose
from sinks.sender.templates import Templates
from streams.broker.topics import ensure_topics


class Counting:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.count += 1
        return "250 OK"


def triggers(count: int, now: datetime) -> list[Trigger]:
    return [
        Trigger(
            trigger_id=f"{number:032x}",
            rule="cart_abandonment",
            person_id=f"shopper-{number:06d}",
            channel=Channel.EMAIL,
            template_id="cart_abandonment",
            due_at=now,
            fired_at=now,
            address=f"shopper{number}@shop.example",
            locale="zh-CN" if number % 4 == 0 else "en-US",
            expires_at=now + timedelta(hours=1),
            context={
                "cart_id": f"cart-{number}",
                "name": "Ada Lovelace",
                "value": 138.0,
                "items": [
                    {
                        "product_id": "sku-0001",
                        "name": "Trail running shoes",
                        "price": 119.0,
                        "quantity": 1,
                        "url": "https://shop.example/p/sku-0001",
                        "image_url": "https://shop.example/i/sku-0001.jpg",
                    },
                    {
                        "product_id": "sku-0002",
                        "name": "Merino wool socks",
                        "price": 19.0,
                        "quantity": 1,
                        "url": "https://shop.example/p/sku-0002",
                    },
                ],
            },
        )
        for number in range(count)
    ]


def bare_client(port: int, messages: Sequence[OutgoingEmail], connections: int) -> float:
    """Seconds for smtplib to send the already rendered messages over `connections` connections."""

    def send(part: Sequence[OutgoingEmail]) -> None:
        with smtplib.SMTP("127.0.0.1", port) as client:
            for message in part:
                client.sendmail(message.from_email, [message.to], message.mime())

    parts = [messages[index::connections] for index in range(connections)]
    threads = [threading.Thread(target=send, args=(part,)) for part in parts]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


async def through_sender(settings: Settings, counting: Counting, expected: int) -> tuple[float, float]:
    """(seconds from the first message received to the last, seconds from start to the last)."""
    sender = Sender(settings, Templates(), SmtpChannel(settings.sender), None)
    started = time.perf_counter()
    task = asyncio.create_task(sender.run())
    first: float | None = None
    try:
        while counting.count < expected:
            if task.done():
                raise RuntimeError(f"the sender stopped: {task.exception()}")
            if first is None and counting.count:
                first = time.perf_counter()
            await asyncio.sleep(0.005)
        finished = time.perf_counter()
    finally:
        sender.stop()
        await task
    return finished - (first or started), finished - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    arguments = parser.parse_args()
    install_signal_handlers()
    count = arguments.messages
    with scratch_directory(arguments.keep) as scratch, running_broker(scratch / "kafka") as broker:
        counting = Counting()
        port = free_port()
        controller = Controller(counting, hostname="127.0.0.1", port=port, command_call_limit=None)
        controller.start()
        try:
            config = SenderSettings(
                smtp_port=port,
                smtp_security="none",
                from_email="nudges@shop.example",
                smtp_connections=arguments.connections,
                smtp_per_second=1e9,
                concurrency=64,
                web_port=free_port(),
            )
            settings = Settings(
                kafka_bootstrap=broker.bootstrap, namespace="bench", partitions=4, demo=True, sender=config
            )
            ensure_topics(settings)
            now = datetime.now(UTC)
            batch = triggers(count, now)
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
            for trigger in batch:
                producer.send(settings.triggers_topic, key=trigger.person_id.encode(), value=trigger.to_json())
            producer.flush()
            producer.close()

            templates = Templates()
            started = time.perf_counter()
            rendered = [compose(settings, templates, trigger, now) for trigger in batch]
            render_seconds = time.perf_counter() - started
            emails = [message for message in rendered if isinstance(message, OutgoingEmail)]
            bare_one = bare_client(port, emails, 1)
            bare_many = bare_client(port, emails, arguments.connections)
            counting.count = 0
            steady, total = asyncio.run(through_sender(settings, counting, count))
        finally:
            controller.stop()
    rows = [
        ("render only (compose: context, templates, MIME)", count / render_seconds, ""),
        ("bare smtplib, 1 connection", count / bare_one, ""),
        (f"bare smtplib, {arguments.connections} connections", count / bare_many, "1.00"),
        (
            f"nudgeflow send, {arguments.connections} connections (first to last)",
            count / steady,
            f"{(count / steady) / (count / bare_many):.2f}",
        ),
        ("nudgeflow send, including start-up", count / total, f"{(count / total) / (count / bare_many):.2f}"),
    ]
    print_table(["path", "messages/s", "ratio to bare"], [(name, f"{rate:,.0f}", ratio) for name, rate, ratio in rows])


if __name__ == "__main__":
    main()
