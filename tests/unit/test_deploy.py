"""The scale-out files parse, and every NUDGEFLOW_* variable they set is a real setting.

There is no container engine on the test machines, so this is what can be checked without running them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.rules import load_rules, parse_rules
from schemas.settings import Settings
from streams.settings_docs import environment_variables

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
SCALE_OUT_FILES = [DEPLOY / "compose.yaml", DEPLOY / "prometheus.yml", REPO / "Dockerfile", *sorted(K8S.glob("*.yaml"))]

KNOWN_VARIABLES = {
    variable for name, field in Settings.model_fields.items() for variable in environment_variables(name, field)
}


def manifests() -> Iterator[dict[str, Any]]:
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            yield from (document for document in yaml.safe_load_all(path.read_text()) if document)


def manifest(kind: str, name: str) -> dict[str, Any]:
    [found] = [m for m in manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


@pytest.mark.parametrize("path", SCALE_OUT_FILES, ids=lambda path: path.name)
def test_every_nudgeflow_variable_is_a_setting(path: Path) -> None:
    unknown = set(re.findall(r"\bNUDGEFLOW_[A-Z0-9_]+", path.read_text())) - KNOWN_VARIABLES
    assert not unknown, f"{path.name} sets variables Settings does not read: {sorted(unknown)}"


def k8s_environments() -> Iterator[tuple[str, dict[str, str]]]:
    shared = manifest("ConfigMap", "nudgeflow-env")["data"]
    for document in manifests():
        if document["kind"] in {"Deployment", "StatefulSet"}:
            for container in document["spec"]["template"]["spec"]["containers"]:
                # Values from the downward API or a Secret are only known in the cluster: left out here.
                own = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
                yield f"{document['kind']}/{document['metadata']['name']}", {**shared, **own}


def compose_environments() -> Iterator[tuple[str, dict[str, str]]]:
    for name, service in compose()["services"].items():
        yield f"compose/{name}", {key: str(value) for key, value in (service.get("environment") or {}).items()}


@pytest.mark.parametrize("source", ["compose", "k8s"])
def test_the_values_they_set_are_valid_settings(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for where, environment in compose_environments() if source == "compose" else k8s_environments():
        with monkeypatch.context() as patched:
            for key, value in environment.items():
                if key.startswith("NUDGEFLOW_"):
                    patched.setenv(key, value)
            try:
                Settings()  # read from the environment as the process would: JSON objects, numbers, paths
            except ValueError as error:
                pytest.fail(f"{where}: {error}")


def test_compose_runs_three_brokers_workers_in_replicas_and_a_sink_on_the_server() -> None:
    services = compose()["services"]
    brokers = [s for s in services.values() if str(s.get("image", "")).startswith("apache/kafka:")]
    assert len(brokers) == 3
    assert len({b["environment"]["KAFKA_NODE_ID"] for b in brokers}) == 3
    voters = brokers[0]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 3
    bootstrap = services["worker"]["environment"]["NUDGEFLOW_KAFKA_BOOTSTRAP"].split(",")
    assert {server.split(":")[0] for server in bootstrap} == {n for n, s in services.items() if s in brokers}
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["sink"]["environment"]["NUDGEFLOW_CLICKHOUSE_URL"].startswith("http://")
    assert "@clickhouse:8123" in services["sink"]["environment"]["NUDGEFLOW_CLICKHOUSE_URL"]
    assert services["collector"]["command"] == ["collector"] and services["sink"]["command"] == ["sink"]
    assert {"clickhouse", "prometheus", "grafana"} <= set(services)
    grafana_mounts = " ".join(services["grafana"]["volumes"])
    assert "./grafana/provisioning:" in grafana_mounts and "./grafana/dashboards:" in grafana_mounts
    for mount in [*grafana_mounts.split(), *services["prometheus"]["volumes"], *services["worker"]["volumes"]]:
        assert (DEPLOY / mount.split(":")[0]).exists(), mount


def test_prometheus_scrapes_every_process_on_the_port_it_listens_on() -> None:
    services = compose()["services"]
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets: set[str] = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            targets.update(static["targets"])
        for dns in job.get("dns_sd_configs", []):
            targets.update(f"{name}:{dns['port']}" for name in dns["names"])
    ports = {
        "worker": services["worker"]["environment"]["NUDGEFLOW_WORKER_WEB_PORT"],
        "collector": services["collector"]["environment"]["NUDGEFLOW_COLLECTOR_PORT"],
        "sink": services["sink"]["environment"]["NUDGEFLOW_SINK_WEB_PORT"],
    }
    assert {f"{name}:{port}" for name, port in ports.items()} <= targets


def test_k8s_has_every_part_in_one_namespace() -> None:
    kinds = {(m["kind"], m["metadata"]["name"]) for m in manifests()}
    assert {
        ("Namespace", "nudgeflow"),
        ("ConfigMap", "nudgeflow-rules"),
        ("StatefulSet", "worker"),
        ("Deployment", "collector"),
        ("Service", "collector"),
        ("Deployment", "sink"),
        ("ScaledObject", "worker"),
    } <= kinds
    assert {m["metadata"].get("namespace", m["metadata"]["name"]) for m in manifests()} == {"nudgeflow"}
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def test_the_rules_configmap_holds_the_deployed_rules_and_the_worker_loads_it() -> None:
    rules = manifest("ConfigMap", "nudgeflow-rules")["data"]["rules.yaml"]
    assert parse_rules(rules, "rules-configmap.yaml") == load_rules(DEPLOY / "rules.yaml")
    worker = manifest("StatefulSet", "worker")["spec"]
    env = manifest("ConfigMap", "nudgeflow-env")["data"]
    [mount] = [m for m in worker["template"]["spec"]["containers"][0]["volumeMounts"] if m["name"] == "rules"]
    assert env["NUDGEFLOW_RULES_FILE"] == f"{mount['mountPath']}/rules.yaml"


def test_the_worker_keeps_rocksdb_on_a_volume_of_its_own() -> None:
    worker = manifest("StatefulSet", "worker")["spec"]
    env = manifest("ConfigMap", "nudgeflow-env")["data"]
    [claim] = worker["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in worker["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env["NUDGEFLOW_DATA_DIR"]


def test_workers_scale_on_the_lag_of_their_own_group_and_never_past_the_partitions() -> None:
    scaled = manifest("ScaledObject", "worker")["spec"]
    env = manifest("ConfigMap", "nudgeflow-env")["data"]
    settings = Settings.model_validate({"partitions": env["NUDGEFLOW_PARTITIONS"]})
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "worker"}
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == settings.app_id
    assert trigger["metadata"]["topic"] == settings.events_topic
    assert trigger["metadata"]["bootstrapServers"] == env["NUDGEFLOW_KAFKA_BOOTSTRAP"]
    assert scaled["maxReplicaCount"] <= settings.partitions


def test_the_image_installs_the_package_on_python_3_11_slim() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert dockerfile.splitlines()[[line.startswith("FROM") for line in dockerfile.splitlines()].index(True)] == (
        "FROM python:3.11-slim"
    )
    assert "pip install" in dockerfile
    assert 'ENTRYPOINT ["nudgeflow"]' in dockerfile
