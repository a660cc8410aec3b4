"""An erasure request as the processor carries it out (the sink deletes the ClickHouse rows itself)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from schemas.identity import ForgetMerged
from schemas.privacy import AuditRecord, ErasureRequest, is_contact_id, person_hash
from streams.rules.contacts import forgotten_contacts
from streams.rules.person import SourcePosition
from streams.timers import utc_now

if TYPE_CHECKING:
    from streams.processing.processor import Processor

log = logging.getLogger(__name__)


def handle(processor: Processor, request: ErasureRequest, position: SourcePosition) -> None:
    """Forget the person: tombstones in every table (and so their changelogs) and on the compacted profiles
    topic, a keyed hash to drop late events, their contacts unindexed, every anonymous id merged into them
    erased in turn, and an audit record."""
    settings = processor.settings
    output = processor.output
    hashed = person_hash(request.person_id, settings.hash_key)
    key = request.person_id.encode()
    partition = position.partition
    if processor.is_erased(partition, request.person_id):
        return  # already done: a redelivered request
    state = processor.latest_state(partition, key)
    if state is not None:
        for change in forgotten_contacts(state.profile, settings.hash_key):
            output.add(settings.identity_topic, change.contact_id.encode(), change.to_json())
    if not is_contact_id(request.person_id) and state is not None and state.merged_into is None:
        sweep = ForgetMerged(
            person_id=request.person_id, request_id=request.request_id, requested_at=request.requested_at
        )
        for every in range(settings.partitions):  # merged ids live in any partition
            output.add(settings.identity_topic, None, sweep.to_json(), partition=every)
    processor.forget(key, partition)
    processor.store.mark_erased(partition, hashed.encode(), utc_now().isoformat().encode())
    output.add(settings.profiles_topic, key, None)  # compaction removes every earlier snapshot
    record = AuditRecord(
        request_id=request.request_id, kind="erase", person_hash=hashed, component="worker",
        completed_at=utc_now(), detail="profile, rule state, contacts and pending timers deleted",
    )  # fmt: skip
    output.add(settings.audit_topic, hashed.encode(), record.to_json())
    log.info("erased a person on request %s", request.request_id)
