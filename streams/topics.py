"""Create nudgeflow's topics with its own partition count, before any process produces to them."""

from __future__ import annotations

import logging
import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

from schemas.settings import Settings

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    pass


def admin_client(settings: Settings, wait_seconds: float = 60.0) -> KafkaAdminClient:
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap.split(","), client_id="nudgeflow-admin")
        except KafkaTimeoutError:
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(
                    f"no Kafka broker answered at {settings.kafka_bootstrap} within {wait_seconds:.0f}s "
                    "(start one with `nudgeflow kafka start`)"
                ) from None
            time.sleep(0.5)


def ensure_topics(settings: Settings, topics: list[str] | None = None) -> list[str]:
    """Create the missing topics; returns the names created. Existing topics are left as they are.

    The table changelogs are created here too, compacted and with the same partition count as the source
    topics: a person's state goes to the changelog partition numbered like their events' partition."""
    wanted = topics if topics is not None else settings.source_topics + settings.table_changelog_topics
    compacted = set(settings.table_changelog_topics)
    admin = admin_client(settings)
    created: list[str] = []
    try:
        existing = set(admin.list_topics())
        for name in wanted:
            if name in existing:
                continue
            try:
                configs = {"cleanup.policy": "compact"} if name in compacted else {}
                topic = NewTopic(
                    name=name,
                    num_partitions=settings.partitions,
                    replication_factor=settings.replication_factor,
                    topic_configs=configs,
                )
                admin.create_topics([topic])
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another process created it in the meantime
            except KafkaError as error:
                raise BrokerUnavailable(f"cannot create topic {name}: {error}") from error
    finally:
        admin.close()
    if created:
        log.info("created topics %s with %d partitions", ", ".join(created), settings.partitions)
    return created
