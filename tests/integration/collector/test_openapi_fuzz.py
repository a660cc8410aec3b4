"""Schemathesis against the collector's own /openapi.json description: no input makes it answer 5xx."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from schemas.settings import Settings
from streams.broker.topics import ensure_topics
from streams.collector.openapi import openapi_document
from tests.integration.collector.test_collector import AUTH, WRITE_KEY, CollectorThread
from tests.integration.conftest import TEST_HASH_SECRET, Broker

pytestmark = pytest.mark.integration

schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def fuzzed_collector(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorThread]:
    namespace = f"fz{uuid.uuid4().hex[:8]}"
    isolated = Settings(
        kafka_bootstrap=broker.bootstrap,
        namespace=namespace,
        partitions=1,
        data_dir=Path(tmp_path_factory.mktemp("fuzz")),
        collector_write_keys={WRITE_KEY: "fuzz"},
        hash_secret=TEST_HASH_SECRET,
        # Unsigned webhooks let the fuzzer reach the mappings; their refusal is tested on its own.
        allow_unsigned_webhooks=True,
    )
    ensure_topics(isolated)
    with CollectorThread(isolated) as running:
        yield running


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case, fuzzed_collector: CollectorThread) -> None:
    response = case.call(base_url=fuzzed_collector.url, headers=AUTH)
    assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text}"
