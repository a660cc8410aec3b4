"""`nudgeflow triggers`: each trigger printed as the senders receive it."""

from __future__ import annotations

import argparse

from schemas.connections import kafka_python_options
from schemas.settings import Settings
from streams.cli.base import Commands


def command_triggers(settings: Settings, arguments: argparse.Namespace) -> int:
    """Print each trigger as it is published: what the email and SMS senders receive."""
    from kafka import KafkaConsumer

    from schemas.triggers import Trigger

    consumer = KafkaConsumer(
        settings.triggers_topic,
        **kafka_python_options(settings),
        auto_offset_reset="latest" if arguments.follow_new else "earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    try:
        for message in consumer:
            trigger = Trigger.model_validate_json(message.value)
            items = ", ".join(item.get("name") or item["product_id"] for item in trigger.context.get("items", []))
            print(
                f"trigger {trigger.rule} -> {trigger.person_id} via {trigger.channel.value}"
                f" (due {trigger.due_at:%H:%M:%S}, id {trigger.trigger_id[:12]}) {items}",
                flush=True,
            )
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def register(commands: Commands) -> None:
    """Add `nudgeflow triggers` to the command line."""
    triggers = commands.add_parser("triggers", help="print triggers as the senders receive them")
    triggers.add_argument("--follow-new", action="store_true", help="only triggers published from now on")
    triggers.set_defaults(handler=command_triggers)
