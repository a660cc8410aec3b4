"""The replicated deployment, checked against what the three-node failure tests run (tests/integration/cluster):
the same broker settings as deploy/kafka/cluster.sh writes, the same replication of nudgeflow's own topics,
the processes the tests run, and k8s workers whose volume, probes, disruption budget and lag-based scaling
agree with the settings the manifests' whole environment makes."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from schemas.settings import Settings
from streams.web.server import HEALTH_PATH
from tests.integration.cluster.conftest import (
    CLUSTER_SCRIPT,
    MIN_INSYNC_REPLICAS,
    NODES,
    REPLICATION_FACTOR,
    SINKS,
    WORKERS,
)
from tests.unit.test_deploy import KNOWN_VARIABLES, compose, manifest

# The broker settings that decide whether a write survives a broker, read from what cluster.sh writes (the
# one source): every replication, in-sync and unclean-election property, plus the two below. compose's
# KAFKA_* names them in upper case with underscores (the apache/kafka image's convention).
REPLICATION_PROPERTY = re.compile(r"replication|insync|isr\b|unclean")
ALSO_COMPARED = ("process.roles", "auto.create.topics.enable")


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


def compose_variable(name: str) -> str:
    return "KAFKA_" + name.upper().replace(".", "_")


def brokers() -> dict[str, dict[str, Any]]:
    services = compose()["services"]
    return {name: s for name, s in services.items() if str(s.get("image", "")).startswith("apache/kafka:")}


def test_compose_brokers_are_configured_as_the_tested_cluster(tmp_path: Path) -> None:
    tested = [cluster_properties(tmp_path, node) for node in NODES]
    assert len(brokers()) == len(tested) == 3
    assert sorted(int(b["environment"]["KAFKA_NODE_ID"]) for b in brokers().values()) == [
        int(p["node.id"]) for p in tested
    ]
    compared = [name for name in tested[0] if REPLICATION_PROPERTY.search(name)] + list(ALSO_COMPARED)
    # The pattern finds what it is meant to: a rename in cluster.sh cannot leave these unchecked.
    assert {
        "default.replication.factor",
        "min.insync.replicas",
        "unclean.leader.election.enable",
        "offsets.topic.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.min.isr",
    } <= set(compared)
    for broker in brokers().values():
        environment = {key: str(value).lower() for key, value in broker["environment"].items()}
        for name in compared:
            key = compose_variable(name)
            assert environment.get(key) == tested[0][name].lower(), (key, name)
        # Nor does compose set one the tested cluster does not.
        untested = {
            key
            for key in environment
            if REPLICATION_PROPERTY.search(key.lower().replace("_", "."))
            and key not in {compose_variable(name) for name in compared}
        }
        assert not untested, untested
        voters = environment["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        assert [voter.split("@")[0] for voter in voters] == [p["node.id"] for p in tested]
        assert len(tested[0]["controller.quorum.voters"].split(",")) == len(voters)


def settings_of(environment: Mapping[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a process started with exactly this environment reads: every NUDGEFLOW_* name a real
    setting, nothing from the environment the tests happen to run in."""
    variables = {key: str(value) for key, value in environment.items() if key.startswith("NUDGEFLOW_")}
    unknown = set(variables) - KNOWN_VARIABLES
    assert not unknown, f"not settings: {sorted(unknown)}"
    with monkeypatch.context() as patched:
        for key in [key for key in os.environ if key.startswith(("NUDGEFLOW_", "KAFKA_", "CLICKHOUSE_"))]:
            patched.delenv(key)
        for key, value in variables.items():
            patched.setenv(key, value)
        return Settings()


def k8s_worker_environment() -> dict[str, str]:
    """The ConfigMap every process shares, then the worker container's own literal values."""
    [container] = manifest("StatefulSet", "worker")["spec"]["template"]["spec"]["containers"]
    own = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return {**manifest("ConfigMap", "nudgeflow-env")["data"], **own}


def test_compose_and_k8s_replicate_nudgeflow_topics_as_the_tests_do(monkeypatch: pytest.MonkeyPatch) -> None:
    for environment in (compose()["x-nudgeflow"]["environment"], manifest("ConfigMap", "nudgeflow-env")["data"]):
        settings = settings_of(environment, monkeypatch)
        assert (settings.replication_factor, settings.min_insync_replicas) == (
            REPLICATION_FACTOR,
            MIN_INSYNC_REPLICAS,
        )
    # Every replica of a topic on a broker of its own, and one of them may be away.
    assert len(brokers()) >= REPLICATION_FACTOR and MIN_INSYNC_REPLICAS < REPLICATION_FACTOR
    # The single node keeps one replica: what `make run` and the fast tests use.
    assert (Settings().replication_factor, Settings().min_insync_replicas) == (1, 1)


def test_the_deployments_run_the_processes_the_failure_tests_run() -> None:
    services = compose()["services"]
    assert {"worker", "collector", "sink"} <= set(services)
    assert len(brokers()) == len(NODES)
    # Workers in one group, at least as many as the tests ride a failure with.
    assert services["worker"]["deploy"]["replicas"] >= WORKERS
    assert manifest("StatefulSet", "worker")["spec"]["replicas"] >= WORKERS
    assert manifest("ScaledObject", "worker")["spec"]["minReplicaCount"] >= WORKERS
    # Sinks sharing one ClickHouse server: k8s runs the tests' two; compose one, its dashboard on a host port.
    assert manifest("Deployment", "sink")["spec"]["replicas"] == SINKS
    assert "replicas" not in services["sink"].get("deploy", {}) and services["sink"]["ports"]


def test_k8s_workers_volume_probes_budget_and_scaling_agree_with_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = manifest("StatefulSet", "worker")
    [container] = worker["spec"]["template"]["spec"]["containers"]
    settings = settings_of(k8s_worker_environment(), monkeypatch)
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
    # KEDA scales this StatefulSet on the lag of the workers' own group (the app id, namespace included) on
    # the events topic, read from the brokers the workers use; never more workers than partitions.
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "worker"}
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "kafka"
    assert (trigger["metadata"]["consumerGroup"], trigger["metadata"]["topic"]) == (
        settings.app_id,
        settings.events_topic,
    )
    assert trigger["metadata"]["bootstrapServers"] == settings.kafka_bootstrap
    assert scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= settings.partitions
    assert worker["spec"]["replicas"] >= scaled["minReplicaCount"]
