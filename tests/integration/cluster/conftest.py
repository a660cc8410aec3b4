"""A real three-node KRaft cluster on 127.0.0.1 (deploy/kafka/cluster.sh), for the failure tests.

Every test here is also marked `cluster` (tests/conftest.py), so `make cluster` runs them apart from the rest."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from schemas.settings import Settings
from streams.broker.topics import ensure_topics
from tests.integration.conftest import REPO, free_port, isolated_settings

# chDB as the sink tests have it: one directory for the session, a database per test.
from tests.integration.sinks.conftest import chdb_path, clickhouse, sink_settings  # noqa: F401

CLUSTER_SCRIPT = REPO / "deploy" / "kafka" / "cluster.sh"
NODES = (1, 2, 3)
# What the tests run at, and what deploy/compose.yaml and deploy/k8s declare (tests/unit/test_deploy_cluster.py).
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2
WORKERS = 2  # worker processes in one group, and sinks sharing one ClickHouse, that each failure test runs
SINKS = 2


@dataclass(frozen=True)
class Cluster:
    ports: tuple[int, int, int]
    data_dir: Path
    environment: dict[str, str]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def script(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(CLUSTER_SCRIPT), *arguments],
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=240,
        )

    def kill(self, node: int) -> None:
        result = self.script("kill-node", str(node))
        assert result.returncode == 0, result.stderr

    def start(self, node: int) -> None:
        result = self.script("start-node", str(node))
        assert result.returncode == 0, result.stderr

    def stop(self, node: int) -> None:
        result = self.script("stop-node", str(node))
        assert result.returncode == 0, result.stderr

    def active_controller(self) -> int:
        """The quorum leader by the highest epoch any node recorded (KRaft's quorum-state file)."""
        best = (-1, -1)
        for node in NODES:
            state = self.data_dir / f"node-{node}" / "logs" / "__cluster_metadata-0" / "quorum-state"
            try:
                recorded = orjson.loads(state.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue
            best = max(best, (int(recorded["leaderEpoch"]), int(recorded["leaderId"])))
        assert best[1] in NODES, "no node has recorded a quorum leader"
        return best[1]


def replication_on_the_brokers(settings: Settings, names: list[str]) -> dict[str, tuple[int, int]]:
    """(fewest replicas of any partition, min.insync.replicas) of each topic, as the brokers describe it: what
    the topics really got, not what was asked for."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap.split(","), client_id="cluster-test")
    try:
        # A broker other than the one that created the topics may not list all their partitions yet.
        deadline = time.monotonic() + 30
        while True:
            described = {str(e.get("name", e.get("topic"))): e["partitions"] for e in admin.describe_topics(names)}
            if all(len(described.get(name) or []) == settings.partitions for name in names):
                break
            assert time.monotonic() < deadline, {name: len(described.get(name) or []) for name in names}
            time.sleep(0.5)
        replicas = {name: min(len(p["replica_nodes"]) for p in partitions) for name, partitions in described.items()}
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names], config_filter="all"
        )["topic"]
    finally:
        admin.close()
    return {name: (replicas[name], int(configs[name]["min.insync.replicas"]["value"])) for name in names}


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    ports = (free_port(), free_port(), free_port())
    data_dir = tmp_path_factory.mktemp("kafka-cluster")
    environment = {
        **os.environ,
        "KAFKA_PORTS": ",".join(map(str, ports)),
        "KAFKA_CONTROLLER_PORTS": ",".join(str(free_port()) for _ in NODES),
        "KAFKA_DATA_DIR": str(data_dir),
    }
    started = Cluster(ports, data_dir, environment)
    result = started.script("start")
    assert result.returncode == 0, f"the test cluster did not start:\n{result.stderr}"
    try:
        yield started
    finally:
        started.script("stop")


@pytest.fixture
def settings(cluster: Cluster, tmp_path: Path, runner: str) -> Settings:
    """A pipeline of its own on the cluster, its topics at three replicas with two in sync."""
    isolated = isolated_settings(
        cluster.bootstrap,
        tmp_path,
        "c",
        runner=runner,
        replication_factor=REPLICATION_FACTOR,
        min_insync_replicas=MIN_INSYNC_REPLICAS,
    )
    ensure_topics(isolated)
    described = replication_on_the_brokers(isolated, [*isolated.source_topics, *isolated.table_changelog_topics])
    wrong = {name: got for name, got in described.items() if got != (REPLICATION_FACTOR, MIN_INSYNC_REPLICAS)}
    assert not wrong, f"topics not at {REPLICATION_FACTOR} replicas with {MIN_INSYNC_REPLICAS} in sync: {wrong}"
    return isolated
