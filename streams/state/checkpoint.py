"""The checkpoint order of the batched runner, which is what makes a crash harmless:

1. the outputs of every batch since the last checkpoint (triggers, suppressions, segment changes,
   identity messages, dead letters, quarantined states) are acknowledged by the broker;
2. then each changed person's state is written to the persons changelog, one record per person;
3. once those are acknowledged, the source offsets are committed.

A crash before 2 replays the batches since the last checkpoint and may publish a trigger again under the
same trigger_id (senders drop it); a crash after 2 replays messages the stored states already count, which
the core skips. A state that cannot be encoded is quarantined (sent in step 2, before any commit), so
offsets never pass a state that was neither stored nor set aside (docs/architecture.md, "Checkpoint order").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from streams.broker.outbox import Outbox
from streams.rules.person import PersonState
from streams.state.store import TableStore
from streams.state.tables import flush

log = logging.getLogger(__name__)

Quarantine = Callable[[bytes, str, Exception, Any], None]


async def store_states(store: TableStore, outbox: Outbox, quarantine: Quarantine) -> None:
    """Step 2: encode and write every changed state once, and wait for the broker."""
    unstored: dict[bytes, tuple[int, PersonState]] = store.take_unstored()
    for key, (partition, state) in unstored.items():
        try:
            encoded = state.to_json()
        except Exception as error:  # this person only: their state is set aside, everyone else is stored
            store.forget_decoded(key)
            quarantine(key, "store", error, state)
            continue
        store.persons.put(partition, key, encoded)
    # Quarantined states leave with the tables' records: both are acknowledged before any commit.
    await flush(store.tables, outbox)


async def commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    """Step 3. A failed commit never stops the runner: the next one carries later offsets, and meanwhile a
    restart replays what the stored states already count."""
    if not offsets:
        return
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, IllegalStateError) as error:
        # A rebalance took a partition meanwhile: its new owner skips what the stored states count.
        log.info("offsets not committed (%s); the partitions' next owner resumes from the states", error)
    except KafkaError as error:
        log.warning("offsets not committed (%s: %s); the next commit covers them", type(error).__name__, error)
