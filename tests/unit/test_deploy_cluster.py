"""The replicated deployment, checked against what the three-node failure tests run (tests/integration/cluster):
the same broker settings as deploy/kafka/cluster.sh writes, the same replication of nudgeflow's own topics,
and k8s workers whose volume, probes, disruption budget and lag-based scaling agree with the settings."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from schemas.settings import Settings
from streams.api import HEALTH_PATH
from tests.integration.cluster.conftest import CLUSTER_SCRIPT, MIN_INSYNC_REPLICAS, REPLICATION_FACTOR
from tests.unit.test_deploy import compose, manifest

# The broker settings that decide whether a write survives a broker: compose's KAFKA_* names them in
# upper case with underscores (the apache/kafka image's convention).
REPLICATION_PROPERTIES = (
    "process.roles",
    "default.replication.factor",
    "min.insync.replicas",
    "offsets.topic.replication.factor",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "share.coordinator.state.topic.replication.factor",
    "auto.create.topics.enable",
)


def cluster_properties(tmp_path: Path, node: int) -> dict[str, str]:
    written = subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), "config", str(node)],
        env={**os.environ, "KAFKA_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return dict(line.split("=", 1) for line in written.splitlines() if "=" in line and not line.startswith("#"))


def test_compose_brokers_are_configured_as_the_tested_cluster(tmp_path: Path) -> None:
    services = compose()["services"]
    brokers = {name: s for name, s in services.items() if str(s.get("image", "")).startswith("apache/kafka:")}
    tested = [cluster_properties(tmp_path, node) for node in (1, 2, 3)]
    assert len(brokers) == len(tested) == 3
    assert sorted(int(b["environment"]["KAFKA_NODE_ID"]) for b in brokers.values()) == [
        int(p["node.id"]) for p in tested
    ]
    for broker in brokers.values():
        environment = {key: str(value).lower() for key, value in broker["environment"].items()}
        for name in REPLICATION_PROPERTIES:
            key = "KAFKA_" + name.upper().replace(".", "_")
            assert environment.get(key) == tested[0][name].lower(), (key, name)
        voters = environment["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        assert [voter.split("@")[0] for voter in voters] == [p["node.id"] for p in tested]
        assert len(tested[0]["controller.quorum.voters"].split(",")) == len(voters)


def test_compose_and_k8s_replicate_nudgeflow_topics_as_the_tests_do() -> None:
    compose_env = compose()["x-nudgeflow"]["environment"]
    k8s_env = manifest("ConfigMap", "nudgeflow-env")["data"]
    for environment in (compose_env, k8s_env):
        settings = Settings.model_validate(
            {
                "replication_factor": environment["NUDGEFLOW_REPLICATION_FACTOR"],
                "min_insync_replicas": environment["NUDGEFLOW_MIN_INSYNC_REPLICAS"],
            }
        )
        assert (settings.replication_factor, settings.min_insync_replicas) == (
            REPLICATION_FACTOR,
            MIN_INSYNC_REPLICAS,
        )
    brokers = [s for s in compose()["services"].values() if str(s.get("image", "")).startswith("apache/kafka:")]
    # Every replica of a topic on a broker of its own, and one of them may be away.
    assert len(brokers) >= REPLICATION_FACTOR and MIN_INSYNC_REPLICAS < REPLICATION_FACTOR
    # The single node keeps one replica: what `make run` and the fast tests use.
    assert (Settings().replication_factor, Settings().min_insync_replicas) == (1, 1)


def test_k8s_workers_volume_probes_budget_and_scaling_agree_with_the_settings() -> None:
    env = manifest("ConfigMap", "nudgeflow-env")["data"]
    worker = manifest("StatefulSet", "worker")
    [container] = worker["spec"]["template"]["spec"]["containers"]
    own = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    settings = Settings.model_validate(
        {
            "partitions": env["NUDGEFLOW_PARTITIONS"],
            "data_dir": env["NUDGEFLOW_DATA_DIR"],
            "worker_web_port": own["NUDGEFLOW_WORKER_WEB_PORT"],
        }
    )
    # RocksDB under data_dir, on the pod's own claim.
    [claim] = worker["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert Path(mounts[claim["metadata"]["name"]]) == settings.data_dir
    # Both probes ask the worker's web port for the path it answers without a token.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in (container["readinessProbe"], container["livenessProbe"]):
        assert probe["httpGet"]["path"] == HEALTH_PATH
        assert ports[probe["httpGet"]["port"]] == settings.worker_web_port
    # The budget covers exactly the worker's pods and always leaves one of the fewest KEDA keeps.
    budget = manifest("PodDisruptionBudget", "worker")["spec"]
    assert budget["selector"] == worker["spec"]["selector"]
    scaled = manifest("ScaledObject", "worker")["spec"]
    assert 1 <= budget["maxUnavailable"] < scaled["minReplicaCount"]
    # Lag of the workers' own group on the events topic, never more workers than partitions.
    [trigger] = scaled["triggers"]
    assert (trigger["metadata"]["consumerGroup"], trigger["metadata"]["topic"]) == (
        settings.app_id,
        settings.events_topic,
    )
    assert scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= settings.partitions
    assert worker["spec"]["replicas"] >= scaled["minReplicaCount"]
