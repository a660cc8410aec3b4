"""The scale-out files parse, and every NUDGEFLOW_* variable they set is a real setting.

There is no container engine on the test machines, so this is what can be checked without running them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from schemas.access import METRICS_PATH
from schemas.rules import load_rules, parse_rules
from schemas.settings import Settings
from streams.cli.settings_docs import environment_variables
from streams.collector.app import UNSUBSCRIBE_PREFIX
from streams.web.server import HEALTH_PATH

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
SCALE_OUT_FILES = [
    DEPLOY / "compose.yaml",
    DEPLOY / "prometheus.yml",
    DEPLOY / "secrets.env.example",
    REPO / "Dockerfile",
    *sorted(K8S.glob("*.yaml")),
]

KNOWN_VARIABLES = {
    variable for name, field in Settings.model_fields.items() for variable in environment_variables(name, field)
} | {  # the nested settings, as NUDGEFLOW_SENDER__SMTP_HOST
    f"NUDGEFLOW_{name}__{inner}".upper()
    for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    for inner in field.annotation.model_fields
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
        "sender": services["sender"]["environment"]["NUDGEFLOW_SENDER__WEB_PORT"],
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
        ("Ingress", "collector"),
        ("PodMonitor", "nudgeflow"),
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


def test_the_image_installs_the_package_on_python_3_11_slim() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert dockerfile.splitlines()[[line.startswith("FROM") for line in dockerfile.splitlines()].index(True)] == (
        "FROM python:3.11-slim"
    )
    assert "pip install" in dockerfile
    assert 'ENTRYPOINT ["nudgeflow"]' in dockerfile


# --- Closed by default: secrets only from Secrets or the env file, no demo mode, only the collector outside.

SECRET_VARIABLES = {
    "NUDGEFLOW_HASH_SECRET",
    "NUDGEFLOW_API_TOKENS",
    "NUDGEFLOW_COLLECTOR_WRITE_KEYS",
    "NUDGEFLOW_SENDGRID_PUBLIC_KEY",
    "NUDGEFLOW_TWILIO_AUTH_TOKEN",
}
# The senders' provider keys: optional (only the provider used needs its own), never in a manifest.
SENDER_SECRETS = {
    "NUDGEFLOW_SENDER__SMTP_PASSWORD",
    "NUDGEFLOW_SENDER__SENDGRID_API_KEY",
    "NUDGEFLOW_TWILIO_AUTH_TOKEN",
}
# Every process needs these two; the collector the write keys and webhook keys as well.
REQUIRED_SECRETS = {"NUDGEFLOW_HASH_SECRET", "NUDGEFLOW_API_TOKENS"}
COLLECTOR_SECRETS = SECRET_VARIABLES
WANTED_SECRETS = {"collector": COLLECTOR_SECRETS, "send": REQUIRED_SECRETS | SENDER_SECRETS}
SECRETS_EXAMPLE = DEPLOY / "secrets.env.example"
NUDGEFLOW_SERVICES = ("worker", "collector", "sink", "sender")
# Paths a probe may use: answered without a token, naming nobody.
PROBE_PATHS = {"worker": {HEALTH_PATH}, "collector": {"/openapi.json"}, "sink": {"/dashboard"}, "send": {"/health"}}


def env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def workloads() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(component, pod spec, its one container) of every Deployment and StatefulSet."""
    for document in manifests():
        if document["kind"] in {"Deployment", "StatefulSet"}:
            pod = document["spec"]["template"]["spec"]
            [container] = pod["containers"]
            yield container["args"][0], pod, container


def truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def test_every_secret_comes_from_a_k8s_secret() -> None:
    for component, _, container in workloads():
        env = {e["name"]: e for e in container.get("env", [])}
        wanted = WANTED_SECRETS.get(component, REQUIRED_SECRETS)
        for name in wanted:
            assert name in env, f"{component}: {name} is not set"
            reference = env[name].get("valueFrom", {}).get("secretKeyRef", {})
            assert reference.get("name") == "nudgeflow-secrets", f"{component}: {name} is not from the Secret"
            assert reference.get("optional", False) == (
                name not in REQUIRED_SECRETS | {"NUDGEFLOW_COLLECTOR_WRITE_KEYS"}
            )
        literal = {e["name"] for e in container.get("env", []) if "value" in e}
        assert not literal & (SECRET_VARIABLES | SENDER_SECRETS), f"{component} writes a secret into its manifest"
    assert not set(manifest("ConfigMap", "nudgeflow-env")["data"]) & SECRET_VARIABLES
    assert not [m for m in manifests() if m["kind"] == "Secret"], "Secrets are created by the operator, not shipped"


def test_compose_takes_every_secret_from_the_env_file_and_git_ignores_it() -> None:
    services = compose()["services"]
    for name in NUDGEFLOW_SERVICES:
        assert services[name]["env_file"] == ["secrets.env"], name
        inline = set(services[name].get("environment") or {}) & (SECRET_VARIABLES | SENDER_SECRETS)
        assert not inline, f"{name} sets a secret inline"
    example = env_file(SECRETS_EXAMPLE)
    assert set(example) == SECRET_VARIABLES
    # Placeholders only: a value copied without editing is visibly wrong, and no real secret is committed.
    assert all("<" in value and ">" in value for value in example.values()), example
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert "secrets.env" in ignored
    assert all(secret["file"].removeprefix("./") in ignored for secret in compose()["secrets"].values())


def deployed_environments() -> Iterator[tuple[str, str, dict[str, str]]]:
    """(where, component, environment) of each nudgeflow process, secrets filled in from the example."""
    secrets = env_file(SECRETS_EXAMPLE)
    for where, environment in k8s_environments():
        component = where.rsplit("/", 1)[1]  # Deployment/sink, StatefulSet/worker
        yield where, component, {**environment, **secrets}
    for where, environment in compose_environments():
        component = where.removeprefix("compose/")
        if component in NUDGEFLOW_SERVICES:
            yield where, component, {**environment, **secrets}


def test_nothing_deployed_runs_in_demo_mode_and_each_process_starts_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    for path in [*SCALE_OUT_FILES, SECRETS_EXAMPLE]:
        assert "dev-write-key" not in path.read_text(), path.name
    checked = set()
    for where, component, environment in deployed_environments():
        assert not truthy(environment.get("NUDGEFLOW_DEMO", "false")), where
        assert not truthy(environment.get("NUDGEFLOW_ALLOW_UNSIGNED_WEBHOOKS", "false")), where
        with monkeypatch.context() as patched:
            for key in [key for key in os.environ if key.startswith("NUDGEFLOW_")]:
                patched.delenv(key)
            for key, value in environment.items():
                if key.startswith("NUDGEFLOW_"):
                    patched.setenv(key, value)
            settings = Settings()
            settings.check_closed(component)  # raises UnsafeSettings with what is left open
            assert not settings.demo and settings.api_tokens and settings.hash_secret is not None
        checked.add(component)
    assert checked == set(NUDGEFLOW_SERVICES)


def test_in_k8s_only_the_collector_is_reachable_from_outside_the_cluster() -> None:
    for service in (m for m in manifests() if m["kind"] == "Service"):
        spec = service["spec"]
        assert spec.get("type", "ClusterIP") == "ClusterIP", service["metadata"]["name"]
        assert not {"externalIPs", "loadBalancerIP", "externalName"} & set(spec)
        assert all("nodePort" not in port for port in spec["ports"])
    for component, pod, container in workloads():
        assert not pod.get("hostNetwork"), component
        assert all("hostPort" not in port for port in container.get("ports", [])), component
    backends = {
        path["backend"]["service"]["name"]
        for ingress in manifests()
        if ingress["kind"] == "Ingress"
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == {"collector"}
    [ingress] = [m for m in manifests() if m["kind"] == "Ingress"]
    paths = {path["path"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]}
    assert paths == {"/v1/", "/webhooks/", UNSUBSCRIBE_PREFIX}  # not /metrics
    assert ingress["spec"]["tls"]


def test_compose_publishes_only_the_collector_beyond_this_host() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            if name != "collector":
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    assert compose()["services"]["collector"]["ports"] == ["8088:8088"]
    assert not compose()["services"]["worker"].get("ports")  # replicas: reached on the compose network only


def test_probes_use_paths_answered_without_a_token() -> None:
    for component, _, container in workloads():
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in container:
                path = container[probe]["httpGet"]["path"]
                assert path in PROBE_PATHS[component], f"{component} {probe} asks {path}, which wants a token"


def test_prometheus_sends_a_bearer_token_to_every_nudgeflow_process() -> None:
    services = compose()["services"]
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    [secret] = services["prometheus"]["secrets"]
    assert secret in compose()["secrets"]
    jobs = [job for job in config["scrape_configs"] if job["job_name"].startswith("nudgeflow-")]
    assert {job["job_name"] for job in jobs} == {f"nudgeflow-{name}" for name in NUDGEFLOW_SERVICES}
    for job in jobs:
        assert job["authorization"] == {"type": "Bearer", "credentials_file": f"/run/secrets/{secret}"}, job
    # k8s: the Prometheus Operator's PodMonitor, with the token from the Secret; annotation-based scraping
    # cannot send one, so no pod asks for it.
    [monitor] = [m for m in manifests() if m["kind"] == "PodMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/part-of": "nudgeflow"}
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == METRICS_PATH
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "nudgeflow-secrets", "key": "metrics-token"},
    }
    for component, _, container in workloads():
        assert "http" in {port["name"] for port in container["ports"]}, component
    for document in manifests():
        if document["kind"] in {"Deployment", "StatefulSet"}:
            annotations = document["spec"]["template"]["metadata"].get("annotations", {})
            assert "prometheus.io/scrape" not in annotations


def test_the_deployed_senders_links_reach_the_collector_over_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    """An email's unsubscribe link (and an SMS's status callback) is the sender's public URL plus a path the
    collector serves: in k8s the Ingress's TLS host, routed to the collector; in compose the same URL the
    collector verifies Twilio's signatures against."""
    [ingress] = [m for m in manifests() if m["kind"] == "Ingress"]
    [host] = [rule["host"] for rule in ingress["spec"]["rules"]]
    assert host in ingress["spec"]["tls"][0]["hosts"]
    senders = {where: env for where, component, env in deployed_environments() if component == "sender"}
    collectors = {where: env for where, component, env in deployed_environments() if component == "collector"}
    assert set(senders) == {"Deployment/sender", "compose/sender"}
    for where, environment in senders.items():
        with monkeypatch.context() as patched:
            for key in [key for key in os.environ if key.startswith("NUDGEFLOW_")]:
                patched.delenv(key)
            for key, value in environment.items():
                patched.setenv(key, value)
            settings = Settings()
        assert settings.sender_public_url == f"https://{host}", where
        assert settings.sender.web_host == "0.0.0.0", where  # scraped from its own address (with the token)
        collector = collectors["Deployment/collector" if where.startswith("Deployment") else "compose/collector"]
        assert collector.get("NUDGEFLOW_WEBHOOK_PUBLIC_URL") == settings.sender_public_url, where
    compose_sender = compose()["services"]["sender"]
    assert compose_sender["command"] == ["send"] and compose_sender["env_file"] == ["secrets.env"]
    assert compose_sender["deploy"]["replicas"] >= 2  # one group: replicas share the triggers' partitions
    [deployment] = [m for m in manifests() if m["kind"] == "Deployment" and m["metadata"]["name"] == "sender"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"] == ["send"]
