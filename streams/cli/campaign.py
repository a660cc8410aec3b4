"""`nudgeflow campaign check FILE | schedule FILE | list | cancel ID`: campaign files validated, and the
control messages every runner reads (the compacted campaigns topic, keyed by campaign id)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from schemas.campaigns import Campaign, CampaignControl, CampaignOp, InvalidCampaign, When, load_campaign
from schemas.rules import load_rules
from schemas.settings import Settings
from streams.cli.base import Commands, command_group, subcommand


def latest_controls(records: Iterable[Any]) -> dict[str, CampaignControl]:
    """The latest valid control message of each campaign, by id, as a runner's registry would take them
    (a record the runners dead-letter is left out here too)."""
    from schemas.campaigns import parse_control

    latest: dict[str, CampaignControl] = {}
    for record in records:
        try:
            message = parse_control(record.value, record.key)
        except InvalidCampaign:
            continue
        known = latest.get(message.campaign_id)
        if message.op == CampaignOp.CANCEL.value and message.campaign is None and known is not None:
            message = message.model_copy(update={"campaign": known.campaign})
        latest[message.campaign_id] = message
    return latest


def describe_when(when: When) -> str:
    """When a campaign goes out, in words."""
    if when.at is not None:
        return f"at {when.at.isoformat()}"
    if when.day is not None:
        return f"{when.day.isoformat()} {when.local_time} local"
    assert when.every is not None
    bounds = "".join(
        [
            f" from {when.starting.isoformat()}" if when.starting else "",
            f" until {when.until.isoformat()}" if when.until else "",
        ]
    )
    return f"every {when.every.value} {when.local_time} local{bounds}"


def describe(campaign: Campaign) -> str:
    """A campaign in one line: channel, template, audience, when and its throttle."""
    audience = " or ".join(campaign.audience.segments)
    if campaign.audience.exclude:
        audience += f" minus {' and '.join(campaign.audience.exclude)}"
    throttle = f", at most {campaign.throttle_per_minute}/min" if campaign.throttle_per_minute else ""
    return f"{campaign.channel.value} {campaign.template_id} to {audience}, {describe_when(campaign.when)}{throttle}"


def _checked(settings: Settings, file: str) -> Campaign | None:
    try:
        return load_campaign(Path(file), load_rules(settings.rules_file))
    except InvalidCampaign as error:
        print(error, file=sys.stderr)
        return None


def read_controls(settings: Settings) -> dict[str, CampaignControl]:
    """The campaigns topic read to its end, as a runner reads it when it starts."""
    import asyncio

    from streams.broker.topics import ensure_topics
    from streams.processing.whole_topic import WholeTopicReader

    ensure_topics(settings, [settings.campaigns_topic])

    async def read() -> list[Any]:
        reader = WholeTopicReader(settings, settings.campaigns_topic)
        try:
            await reader.start()
            return await reader.catch_up()
        finally:
            await reader.stop()

    return latest_controls(asyncio.run(read()))


def publish(settings: Settings, message: CampaignControl) -> None:
    """Publish one control message on the campaigns topic and wait until the broker has it."""
    from kafka import KafkaProducer

    from schemas.connections import kafka_python_options

    producer = KafkaProducer(**kafka_python_options(settings), acks="all")
    try:
        key = message.campaign_id.encode()
        producer.send(settings.campaigns_topic, key=key, value=message.to_json()).get(timeout=30)
    finally:
        producer.close()


def command_check(settings: Settings, arguments: argparse.Namespace) -> int:
    """`nudgeflow campaign check`: validate a campaign file against the rules' segments."""
    campaign = _checked(settings, arguments.file)
    if campaign is None:
        return 1
    print(f"{arguments.file}: ok (campaign {campaign.id}: {describe(campaign)})")
    return 0


def command_schedule(settings: Settings, arguments: argparse.Namespace) -> int:
    """`nudgeflow campaign schedule`: validate a campaign file, then schedule it, unless its id is taken or too many
    campaigns are live."""
    from streams.processing.campaigns import MOST_LIVE_CAMPAIGNS
    from streams.timers import utc_now

    campaign = _checked(settings, arguments.file)
    if campaign is None:
        return 1
    known = read_controls(settings)
    if campaign.id in known:
        # People already waiting keep the occurrence they were given: a changed campaign needs a new id.
        state = "cancelled" if known[campaign.id].op == CampaignOp.CANCEL.value else "scheduled"
        print(f"campaign {campaign.id} is already {state}; schedule a changed campaign under a new id", file=sys.stderr)
        return 1
    live = sum(1 for message in known.values() if message.op == CampaignOp.SCHEDULE.value)
    if live >= MOST_LIVE_CAMPAIGNS:
        print(f"{live} campaigns are live, the most the runners keep; cancel one first", file=sys.stderr)
        return 1
    publish(settings, CampaignControl(op="schedule", campaign_id=campaign.id, campaign=campaign, at=utc_now()))
    print(f"scheduled {campaign.id}: {describe(campaign)}")
    return 0


def command_list(settings: Settings, arguments: argparse.Namespace) -> int:
    """`nudgeflow campaign list`: every campaign on the control topic, with its state."""
    known = read_controls(settings)
    for campaign_id, message in sorted(known.items()):
        state = "cancelled" if message.op == CampaignOp.CANCEL.value else "scheduled"
        detail = describe(message.campaign) if message.campaign is not None else ""
        print(f"{campaign_id}\t{state}\t{message.at.isoformat()}\t{detail}")
    return 0


def command_cancel(settings: Settings, arguments: argparse.Namespace) -> int:
    """`nudgeflow campaign cancel`: cancel a scheduled campaign; what has not gone out will not."""
    from streams.timers import utc_now

    campaign_id = arguments.campaign_id
    known = read_controls(settings).get(campaign_id)
    if known is None:
        print(f"no campaign {campaign_id} on {settings.campaigns_topic}", file=sys.stderr)
        return 1
    if known.op == CampaignOp.CANCEL.value:
        print(f"campaign {campaign_id} was cancelled already ({known.at.isoformat()})")
        return 0
    # The cancel carries the campaign: compaction keeps only it, and a runner that starts later still knows
    # which deadlines to suppress.
    publish(settings, CampaignControl(op="cancel", campaign_id=campaign_id, campaign=known.campaign, at=utc_now()))
    print(f"cancelled {campaign_id}: what has not gone out will not")
    return 0


def register(commands: Commands) -> None:
    """Add `nudgeflow campaign` and its subcommands to the command line."""
    campaign = command_group(commands, "campaign", "campaigns: one message to a segment at a chosen time")
    subcommand(campaign, "check", "validate a campaign file against the rules' segments", command_check, "file")
    subcommand(campaign, "schedule", "validate a campaign file, then schedule it", command_schedule, "file")
    subcommand(campaign, "list", "every campaign on the control topic and its state", command_list)
    subcommand(campaign, "cancel", "cancel a campaign: what has not gone out will not", command_cancel, "campaign_id")
