"""The collector's edge to Kafka: an interface the handlers use, and its aiokafka implementation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.connections import aiokafka_options
from schemas.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """One message for a topic."""

    topic: str
    key: bytes | None
    value: bytes


class BrokerUnavailable(RuntimeError):
    """The records could not be made durable; the caller must answer 503 and claim nothing."""


class EventProducer(Protocol):
    """What the collector sends its records through."""

    async def send_all(self, records: Sequence[Record]) -> None:
        """Return only once the broker acknowledged every record; raise BrokerUnavailable otherwise."""

    async def close(self) -> None: ...


class KafkaEventProducer:
    """AIOKafkaProducer with acks=all and idempotence, started lazily so the collector serves (503) while the
    broker is away and recovers by itself when it comes back."""

    def __init__(self, settings: Settings, linger_ms: int = 5) -> None:
        self._settings = settings
        # One bound on the whole answer (connecting, metadata, acknowledgement): past it the client gets 503
        # and retries, instead of waiting out a leader change the cluster may take longer to settle.
        self._ack_timeout = settings.collector_ack_timeout_seconds
        self._linger_ms = linger_ms
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def _started(self) -> Any:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    **aiokafka_options(self._settings),
                    client_id="nudgeflow-collector",
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=self._linger_ms,
                    request_timeout_ms=int(self._ack_timeout * 1000),
                )
                try:
                    await producer.start()
                except (KafkaError, OSError) as error:
                    await producer.stop()
                    raise BrokerUnavailable(
                        f"Kafka at {self._settings.kafka_bootstrap} is unavailable: {error}"
                    ) from None
                except asyncio.CancelledError:  # the request's deadline passed while connecting
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def send_all(self, records: Sequence[Record]) -> None:
        if not records:
            return
        try:
            async with asyncio.timeout(self._ack_timeout):
                producer = await self._started()
                # Enqueue everything first so the batch goes out in as few requests as possible, then wait for acks.
                deliveries = [await producer.send(record.topic, record.value, key=record.key) for record in records]
                await asyncio.gather(*deliveries)
        except (KafkaError, TimeoutError) as error:
            reason = str(error) or type(error).__name__
            log.warning("produce failed: %s", reason)
            raise BrokerUnavailable(f"Kafka did not acknowledge the events: {reason}") from None

    async def close(self) -> None:
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None
