"""Create nudgeflow's topics with its own partition count, before any process produces to them."""

from __future__ import annotations

import logging
import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

from schemas.connections import BrokerRefused, BrokerUnavailable, kafka_python_options
from schemas.settings import Settings
from streams.broker.check import check_broker

log = logging.getLogger(__name__)

__all__ = ["BrokerRefused", "BrokerUnavailable", "admin_client", "check_broker", "ensure_topics"]


def admin_client(settings: Settings, wait_seconds: float = 60.0) -> KafkaAdminClient:
    """An admin client of the broker, waiting up to `wait_seconds` for it to answer."""
    check_broker(settings, wait_seconds)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return KafkaAdminClient(**kafka_python_options(settings), client_id="nudgeflow-admin")
        except KafkaTimeoutError:
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(
                    f"no Kafka broker answered at {settings.kafka_bootstrap} within {wait_seconds:.0f}s "
                    "(start one with `nudgeflow kafka start`)"
                ) from None
            time.sleep(0.5)


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Kafka configs of each topic nudgeflow creates (docs/architecture.md, "Erasure reaches every copy").

    State that is replaced (table changelogs, profile snapshots) is compacted, so an erasure's tombstone
    removes every earlier copy. Every other topic carrying personal data keeps it for at most
    `personal_data_retention_hours`, the bound on how long a raw copy outlives an erasure. The audit topic
    names people only by hash and is kept for a year; the clock topic's ticks name nobody and matter only
    until read, so it keeps an hour."""
    retention = str(int(settings.personal_data_retention_hours * 3_600_000))
    configs: dict[str, dict[str, str]] = {name: {"retention.ms": retention} for name in settings.source_topics}
    configs[settings.audit_topic] = {"retention.ms": str(365 * 24 * 3_600_000)}
    configs[settings.clock_topic] = {"retention.ms": str(3_600_000)}
    # A campaign's latest control message must outlive any retention (a cancel stays, so no runner sends it).
    # A person's latest scores must too, until the next training replaces them or an erasure's tombstone;
    # likewise a product's latest recommendations.
    for name in (
        *settings.table_changelog_topics,
        settings.profiles_topic,
        settings.campaigns_topic,
        settings.scores_topic,
        settings.recommendations_topic,
    ):
        configs[name] = {"cleanup.policy": "compact"}
    # The sender's ledger names no one (trigger ids and states) and must outlive every trigger a replay of
    # the triggers topic could bring back: compacted to the last state, kept four times that topic's retention.
    configs[settings.deliveries_topic] = {"cleanup.policy": "compact,delete", "retention.ms": str(int(retention) * 4)}
    return configs


def ensure_topics(settings: Settings, topics: list[str] | None = None) -> list[str]:
    """Create the missing topics and wait until the broker's metadata lists every wanted one with all its
    partitions; returns the names created. Existing topics are left as they are.

    The table changelogs are created here too, compacted and with the same partition count as the source
    topics: a person's state goes to the changelog partition numbered like their events' partition.
    Waiting matters: a consumer that subscribes before a topic is in the metadata holds none of its
    partitions until its next metadata refresh, minutes later."""
    wanted = topics if topics is not None else settings.source_topics + settings.table_changelog_topics
    configs = topic_configs(settings)
    admin = admin_client(settings)
    created: list[str] = []
    try:
        existing = set(admin.list_topics())
        for name in wanted:
            if name in existing:
                continue
            try:
                topic = NewTopic(
                    name=name,
                    num_partitions=settings.partitions,
                    replication_factor=settings.replication_factor,
                    # Every producer sends with acks=all: a write is acknowledged once this many replicas hold it.
                    topic_configs={**configs.get(name, {}), "min.insync.replicas": str(settings.min_insync_replicas)},
                )
                admin.create_topics([topic])
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another process created it in the meantime
            except KafkaError as error:
                raise BrokerUnavailable(f"cannot create topic {name}: {error}") from error
        _wait_until_listed(admin, wanted)
    finally:
        admin.close()
    if created:
        log.info("created topics %s with %d partitions", ", ".join(created), settings.partitions)
    return created


TOPICS_WAIT_SECONDS = 60.0


def _wait_until_listed(admin: KafkaAdminClient, topics: list[str]) -> None:
    """Until every topic is described with its partitions (a topic someone else is creating counts too)."""
    deadline = time.monotonic() + TOPICS_WAIT_SECONDS
    missing = list(topics)
    while True:
        try:
            described = admin.describe_topics(missing)
        except KafkaError:
            described = []
        ready = {
            str(entry.get("name", entry.get("topic")))  # kafka-python 3 names the topic "name"
            for entry in described
            if not entry.get("error_code") and len(entry.get("partitions") or []) >= 1
        }
        missing = [name for name in missing if name not in ready]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise BrokerUnavailable(f"topics {', '.join(missing)} are not in the broker's metadata after 60s")
        time.sleep(0.2)
