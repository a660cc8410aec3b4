"""Which worker holds a person: the owner of their partition, read from the consumer group.

A person's state lives on the worker that holds their partition of the events topic. Workers put their
HTTP URL in their Kafka client id, so the group's description says where to redirect a question about
someone held elsewhere (the Faust runner routes with Faust's own `table_route` instead).
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient

from schemas.connections import kafka_python_options
from schemas.settings import Settings

CLIENT_PREFIX = "nudgeflow-worker "


def owner_url(settings: Settings, partition: int) -> str | None:
    """The URL of the worker whose consumer holds `partition` of the events topic, from the group's
    description (workers put their URL in their client id); None while nobody holds it."""
    admin = KafkaAdminClient(**kafka_python_options(settings), client_id="nudgeflow-api")
    try:
        description: dict[str, Any] = admin.describe_groups([settings.app_id])[settings.app_id]
    finally:
        admin.close()
    for member in description.get("members") or []:
        client_id = str(member.get("client_id", ""))
        if not client_id.startswith(CLIENT_PREFIX):
            continue
        for topic, numbers in _assigned(member.get("member_assignment")):
            if topic == settings.events_topic and partition in numbers:
                return client_id.removeprefix(CLIENT_PREFIX)
    return None


def _assigned(assignment: Any) -> list[tuple[str, list[int]]]:
    """(topic, partitions) pairs of a member's decoded assignment, as a dict or as a protocol object."""
    if assignment is None:
        return []
    if isinstance(assignment, dict):
        pairs = assignment.get("assigned_partitions") or assignment.get("assignment") or []
    else:
        pairs = getattr(assignment, "assigned_partitions", None) or getattr(assignment, "assignment", [])
    result = []
    for pair in pairs:
        if isinstance(pair, dict):
            result.append((str(pair.get("topic")), list(pair.get("partitions") or [])))
        else:
            topic, numbers = pair[0], pair[1]
            result.append((str(topic), list(numbers)))
    return result
