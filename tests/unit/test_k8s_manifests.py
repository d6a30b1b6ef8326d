"""Offline checks of the kustomize base in ``deploy/k8s/base``.

Every object is validated against the upstream Kubernetes JSON schemas shipped
by the ``kubernetes-validate`` package, in *strict* mode (``additionalProperties:
false``), so a misspelt or unknown field fails the test. On top of the schema,
the test enforces the project's own deployment conventions (requests, probes,
non-root, labels, wiring between objects).

Custom resources (the Prometheus Operator's ServiceMonitor and PrometheusRule,
KEDA's ScaledObject) have no schema in ``kubernetes-validate``: they are
checked structurally instead (known fields only, required fields, and that what
they reference exists: Deployments, Services, port names, the alert rules file).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

# Kubernetes API version the manifests must be valid for (schemas are shipped
# offline by kubernetes-validate; bump deliberately together with the cluster).
K8S_VERSION = "1.30.0"

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_DIR = REPO_ROOT / "deploy" / "k8s" / "base"
KUSTOMIZATION = BASE_DIR / "kustomization.yaml"
ALERT_RULES = REPO_ROOT / "deploy" / "monitoring" / "prometheus" / "moderation-rules.yaml"

# Custom resources in the base: (apiVersion, kind). Everything else must be a
# built-in kind that kubernetes-validate knows.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}

# Every long-running role is scraped: Deployment -> (metrics port name, number).
# Never the web role's `http` port: the console's port serves no metrics.
SCRAPED_DEPLOYMENTS = {
    "moderation-worker": ("metrics", 9100),
    "moderation-appeals": ("metrics", 9100),
    "moderation-web": ("metrics", 9101),
}
# Deployment -> (the setting that names its metrics port, the setting's default).
METRICS_PORT_SETTING = {
    "moderation-worker": ("METRICS_PORT", "9100"),
    "moderation-appeals": ("METRICS_PORT", "9100"),
    "moderation-web": ("WEB_METRICS_PORT", "9101"),
}
# Every container port of each long-running role.
CONTAINER_PORTS = {
    "moderation-worker": {"metrics": 9100},
    "moderation-appeals": {"metrics": 9100},
    "moderation-web": {"http": 8080, "metrics": 9101},
}
# Deployments whose replica count an autoscaler owns, and by which kind.
AUTOSCALED = {"moderation-worker": "ScaledObject", "moderation-web": "HorizontalPodAutoscaler"}

NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
APP_NAME = "moderation"
RUN_AS_USER = 10001

EXPECTED_CONFIG = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
    "UPLOADS_TOPIC": "uploads",
    "DECISIONS_TOPIC": "moderation.decisions",
    "DLQ_TOPIC": "uploads.dlq",
    "CONSUMER_GROUP": "moderation-worker",
    "REVIEW_THRESHOLD": "0.6",
    "PDQ_MATCH_DISTANCE": "31",
    "LOG_FORMAT": "json",
}

# (kind, name) -> component label / container args.
EXPECTED_WORKLOADS = {
    ("Deployment", "moderation-worker"): ("worker", ["worker"]),
    ("Deployment", "moderation-appeals"): ("appeals", ["appeals"]),
    ("Deployment", "moderation-web"): ("web", ["web"]),
    ("Job", "moderation-db-upgrade"): ("migrate", ["db", "upgrade"]),
}


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #
def _yaml_files() -> list[Path]:
    return sorted(p for p in BASE_DIR.iterdir() if p.is_file() and p.suffix in {".yaml", ".yml"})


def _resource_files() -> list[Path]:
    return [p for p in _yaml_files() if p.name not in {"kustomization.yaml", "kustomization.yml"}]


def _load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def _load_objects() -> list[tuple[str, dict[str, Any]]]:
    objects = []
    for path in _resource_files():
        for doc in _load(path):
            objects.append((path.name, doc))
    return objects


OBJECTS = _load_objects()


def _is_custom(obj: dict[str, Any]) -> bool:
    return (obj.get("apiVersion"), obj.get("kind")) in CUSTOM_KINDS


BUILTIN_OBJECTS = [item for item in OBJECTS if not _is_custom(item[1])]
CUSTOM_OBJECTS = [item for item in OBJECTS if _is_custom(item[1])]


def _obj_id(item: tuple[str, dict[str, Any]]) -> str:
    fname, obj = item
    return f"{fname}:{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for _, o in OBJECTS if o.get("kind") == kind}


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
        return obj["spec"]["template"]["spec"]
    if obj.get("kind") == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if obj.get("kind") == "Pod":
        return obj["spec"]
    return None


def _containers(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    spec = _pod_spec(obj) or {}
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            yield key, c


WORKLOADS = [item for item in OBJECTS if _pod_spec(item[1]) is not None]


# --------------------------------------------------------------------------- #
# Kustomization
# --------------------------------------------------------------------------- #
def test_base_dir_has_manifests() -> None:
    assert KUSTOMIZATION.is_file(), f"missing {KUSTOMIZATION}"
    assert OBJECTS, "no Kubernetes objects found in deploy/k8s/base"


def test_kustomization_lists_exactly_the_resource_files() -> None:
    (kustomization,) = _load(KUSTOMIZATION)
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization.get("resources") or []
    assert len(resources) == len(set(resources)), f"duplicate entries: {resources}"
    assert sorted(resources) == sorted(p.name for p in _resource_files())


def test_object_names_unique() -> None:
    keys = [(o["kind"], o["metadata"]["name"]) for _, o in OBJECTS]
    assert len(keys) == len(set(keys)), keys


# --------------------------------------------------------------------------- #
# Schema validation (strict: unknown fields are errors)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("item", BUILTIN_OBJECTS, ids=_obj_id)
def test_object_matches_kubernetes_schema(item: tuple[str, dict[str, Any]]) -> None:
    fname, obj = item
    error = None
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "<root>"
        error = f"{fname}: {path}: {exc.message} (k8s {exc.version}, strict)"
    except kubernetes_validate.SchemaNotFoundError as exc:
        error = f"{fname}: {exc.message}"
    if error:
        # pytrace=False: the jsonschema traceback dumps the whole schema.
        pytest.fail(error, pytrace=False)


# --------------------------------------------------------------------------- #
# Conventions
# --------------------------------------------------------------------------- #
def test_expected_workloads_present() -> None:
    found = {(o["kind"], o["metadata"]["name"]) for _, o in WORKLOADS}
    assert found == set(EXPECTED_WORKLOADS)


@pytest.mark.parametrize("item", OBJECTS, ids=_obj_id)
def test_app_name_label(item: tuple[str, dict[str, Any]]) -> None:
    _, obj = item
    assert obj["metadata"].get("labels", {}).get(NAME_LABEL) == APP_NAME


@pytest.mark.parametrize("item", WORKLOADS, ids=_obj_id)
def test_workload_labels_args_and_selector(item: tuple[str, dict[str, Any]]) -> None:
    _, obj = item
    component, args = EXPECTED_WORKLOADS[(obj["kind"], obj["metadata"]["name"])]
    expected = {NAME_LABEL: APP_NAME, COMPONENT_LABEL: component}
    template_labels = obj["spec"]["template"]["metadata"]["labels"]
    assert expected.items() <= obj["metadata"]["labels"].items()
    assert expected.items() <= template_labels.items()
    if obj["kind"] == "Deployment":
        selector = obj["spec"]["selector"]["matchLabels"]
        assert selector.items() <= template_labels.items()
        assert selector == expected
    (container,) = obj["spec"]["template"]["spec"]["containers"]
    assert container["image"].split(":")[0].rsplit("/", 1)[-1] == "moderation"
    assert "command" not in container, "use the image ENTRYPOINT; select the role via args"
    assert container["args"] == args


@pytest.mark.parametrize("item", WORKLOADS, ids=_obj_id)
def test_containers_have_resource_requests(item: tuple[str, dict[str, Any]]) -> None:
    _, obj = item
    for _, c in _containers(obj):
        requests = (c.get("resources") or {}).get("requests") or {}
        assert {"cpu", "memory"} <= requests.keys(), f"{c['name']}: requests={requests}"
        limits = (c.get("resources") or {}).get("limits") or {}
        assert "memory" in limits, f"{c['name']}: no memory limit"


@pytest.mark.parametrize("item", [w for w in WORKLOADS if w[1]["kind"] == "Deployment"], ids=_obj_id)
def test_long_running_containers_have_probes(item: tuple[str, dict[str, Any]]) -> None:
    # Probes only make sense for long-running servers; the migrate Job's
    # container is a run-to-completion CLI and serves no HTTP.
    _, obj = item
    for kind, c in _containers(obj):
        if kind != "containers":
            continue
        port_names = {p["name"] for p in c.get("ports") or [] if "name" in p}
        for probe_name, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            probe = c.get(probe_name)
            assert probe, f"{c['name']}: missing {probe_name}"
            http = probe.get("httpGet")
            assert http and http["path"] == path, f"{c['name']}.{probe_name}: {probe}"
            assert http["port"] in port_names, (
                f"{c['name']}.{probe_name}: port {http['port']!r} not in {port_names}"
            )


@pytest.mark.parametrize("item", WORKLOADS, ids=_obj_id)
def test_containers_run_as_non_root(item: tuple[str, dict[str, Any]]) -> None:
    _, obj = item
    pod_sc = (_pod_spec(obj) or {}).get("securityContext") or {}
    for _, c in _containers(obj):
        sc = c.get("securityContext") or {}
        run_as_non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        run_as_user = sc.get("runAsUser", pod_sc.get("runAsUser"))
        assert run_as_non_root is True, f"{c['name']}: runAsNonRoot must be true"
        assert run_as_user == RUN_AS_USER, f"{c['name']}: runAsUser={run_as_user}"
        assert sc.get("allowPrivilegeEscalation") is False, c["name"]
        assert sc.get("readOnlyRootFilesystem") is True, c["name"]
        assert sc.get("privileged") is not True, c["name"]


@pytest.mark.parametrize("item", WORKLOADS, ids=_obj_id)
def test_tmp_is_writable_emptydir(item: tuple[str, dict[str, Any]]) -> None:
    _, obj = item
    spec = _pod_spec(obj) or {}
    empty_dirs = {v["name"] for v in spec.get("volumes") or [] if "emptyDir" in v}
    for _, c in _containers(obj):
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
        assert mounts.get("/tmp") in empty_dirs, f"{c['name']}: /tmp must be an emptyDir"


@pytest.mark.parametrize("item", WORKLOADS, ids=_obj_id)
def test_env_from_config_and_secret(item: tuple[str, dict[str, Any]]) -> None:
    _, obj = item
    configmaps = set(_by_kind("ConfigMap"))
    for kind, c in _containers(obj):
        if kind != "containers":
            continue
        env_from = c.get("envFrom") or []
        cm_refs = {e["configMapRef"]["name"] for e in env_from if "configMapRef" in e}
        secret_refs = {e["secretRef"]["name"] for e in env_from if "secretRef" in e}
        assert cm_refs == {"moderation-config"} and cm_refs <= configmaps
        # Secret is intentionally not part of the base; it must pre-exist.
        assert secret_refs == {"moderation-secrets"}
    assert not _by_kind("Secret"), "secrets must not be committed to the base"


def test_configmap_contents() -> None:
    cm = _by_kind("ConfigMap")["moderation-config"]
    assert cm["data"] == EXPECTED_CONFIG
    assert all(isinstance(v, str) for v in cm["data"].values())


@pytest.mark.parametrize("name", sorted(SCRAPED_DEPLOYMENTS))
def test_metrics_port_and_scrape_annotations(name: str) -> None:
    port_name, port = SCRAPED_DEPLOYMENTS[name]
    deployment = _by_kind("Deployment")[name]
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == CONTAINER_PORTS[name] and ports[port_name] == port
    ann = deployment["spec"]["template"]["metadata"].get("annotations") or {}
    assert ann.get("prometheus.io/scrape") == "true"
    assert ann.get("prometheus.io/port") == str(port)
    assert ann.get("prometheus.io/path") == "/metrics"
    env = {e["name"]: e.get("value") for e in c.get("env") or []}
    setting, default = METRICS_PORT_SETTING[name]
    assert env.get(setting, default) == str(port)


def test_web_service_targets_web_http_port() -> None:
    svc = _by_kind("Service")["moderation-web"]
    web = _by_kind("Deployment")["moderation-web"]
    template_labels = web["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= template_labels.items()
    (c,) = web["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert container_ports == {"http": 8080, "metrics": 9101}
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert set(ports) == {"http", "metrics"}
    assert ports["http"]["port"] == 80 and ports["http"]["targetPort"] in ("http", 8080)
    assert ports["metrics"]["targetPort"] in ("metrics", 9101)


def test_web_metrics_are_scraped_from_the_metrics_port_only() -> None:
    # The console's port (what an Ingress routes to) serves no /metrics: the
    # queue gauges include the depth of the restricted queue of suspected minors.
    monitor = _by_kind("ServiceMonitor")["moderation-web"]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    web = _by_kind("Deployment")["moderation-web"]
    annotations = web["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9101"


def test_migrate_job_does_not_restart_forever() -> None:
    job = _by_kind("Job")["moderation-db-upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}
    assert job["spec"].get("backoffLimit") is not None


# --------------------------------------------------------------------------- #
# Services, scraping and autoscaling
# --------------------------------------------------------------------------- #
def _selected_pods(selector: dict[str, str]) -> list[dict[str, Any]]:
    """Workloads whose pod template carries every label of ``selector``."""
    return [
        obj
        for _, obj in WORKLOADS
        if selector.items() <= obj["spec"]["template"]["metadata"]["labels"].items()
    ]


def _container_ports(obj: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for _, c in _containers(obj) for p in c.get("ports") or []}


@pytest.mark.parametrize("name", sorted(_by_kind("Service")))
def test_service_selects_one_deployment_and_its_ports(name: str) -> None:
    svc = _by_kind("Service")[name]
    (target,) = _selected_pods(svc["spec"]["selector"])
    assert target["kind"] == "Deployment"
    container_ports = _container_ports(target)
    for port in svc["spec"]["ports"]:
        target_port = port.get("targetPort", port["port"])
        assert target_port in container_ports or target_port in container_ports.values(), port


def test_every_scraped_deployment_has_a_service_monitor() -> None:
    monitors = _by_kind("ServiceMonitor")
    services = _by_kind("Service")
    covered = set()
    for monitor in monitors.values():
        svc = services[_monitored_service(monitor)]
        covered |= {d["metadata"]["name"] for d in _selected_pods(svc["spec"]["selector"])}
    assert covered == set(SCRAPED_DEPLOYMENTS)


def test_metrics_services_are_headless() -> None:
    # Nothing connects to the consumers' metrics port through a virtual IP.
    for name in ("moderation-worker", "moderation-appeals"):
        assert _by_kind("Service")[name]["spec"].get("clusterIP") == "None", name


def test_expected_custom_resources() -> None:
    # Each is checked by a test below; a new kind needs its own checks.
    found = {(o["kind"], o["metadata"]["name"]) for _, o in CUSTOM_OBJECTS}
    assert found == {
        ("ServiceMonitor", "moderation-worker"),
        ("ServiceMonitor", "moderation-appeals"),
        ("ServiceMonitor", "moderation-web"),
        ("PrometheusRule", "moderation"),
        ("ScaledObject", "moderation-worker"),
    }


# -- ServiceMonitor ---------------------------------------------------------------
SERVICE_MONITOR_SPEC = {
    "endpoints", "selector", "namespaceSelector", "jobLabel", "targetLabels", "podTargetLabels",
    "sampleLimit", "targetLimit", "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit",
    "keepDroppedTargets", "attachMetadata", "scrapeProtocols", "scrapeClass", "bodySizeLimit",
}  # fmt: skip
SERVICE_MONITOR_ENDPOINT = {
    "port", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout", "tlsConfig",
    "bearerTokenSecret", "authorization", "honorLabels", "honorTimestamps", "basicAuth", "oauth2",
    "metricRelabelings", "relabelings", "proxyUrl", "followRedirects", "enableHttp2", "filterRunning",
}  # fmt: skip
_DURATION = re.compile(r"^((\d+)h)?((\d+)m)?((\d+)s)?$")


def _seconds(duration: str) -> int:
    match = _DURATION.match(duration)
    assert match and duration, f"not a Prometheus duration: {duration!r}"
    h, m, s = (int(match.group(i) or 0) for i in (2, 4, 6))
    return h * 3600 + m * 60 + s


def _monitored_service(monitor: dict[str, Any]) -> str:
    """The one Service of the base a ServiceMonitor selects."""
    selector = monitor["spec"]["selector"]
    assert set(selector) == {"matchLabels"}, selector
    labels = selector["matchLabels"]
    matches = [
        name
        for name, svc in _by_kind("Service").items()
        if labels.items() <= svc["metadata"]["labels"].items()
    ]
    assert len(matches) == 1, f"{monitor['metadata']['name']}: selects {matches}"
    return matches[0]


def _alert_rule_groups() -> list[dict[str, Any]]:
    (rules,) = _load(ALERT_RULES)
    return rules["groups"]


def _target_down_jobs() -> re.Pattern[str]:
    """The job matcher of ModerationTargetDown, as a regex."""
    (expr,) = [
        r["expr"]
        for g in _alert_rule_groups()
        for r in g["rules"]
        if r.get("alert") == "ModerationTargetDown"
    ]
    match = re.search(r'job=~"([^"]+)"', expr)
    assert match, expr
    return re.compile(match.group(1))


@pytest.mark.parametrize("name", sorted(_by_kind("ServiceMonitor")))
def test_service_monitor(name: str) -> None:
    monitor = _by_kind("ServiceMonitor")[name]
    spec = monitor["spec"]
    assert set(spec) <= SERVICE_MONITOR_SPEC, set(spec) - SERVICE_MONITOR_SPEC
    assert "namespaceSelector" not in spec, "select Services in the object's own namespace"
    service_name = _monitored_service(monitor)
    service = _by_kind("Service")[service_name]
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert spec["endpoints"], name
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= SERVICE_MONITOR_ENDPOINT, set(endpoint) - SERVICE_MONITOR_ENDPOINT
        assert endpoint["port"] in port_names, f"{name}: port {endpoint['port']!r} not in {port_names}"
        assert endpoint.get("path", "/metrics") == "/metrics"
        interval = _seconds(endpoint.get("interval", "30s"))
        assert interval >= 30, "each web scrape queries the database: keep the interval at 30 s or more"
        assert _seconds(endpoint.get("scrapeTimeout", "10s")) <= interval
    # The scrape job is named after the Service (no jobLabel): the alert rules
    # match these job names.
    assert "jobLabel" not in spec
    assert _target_down_jobs().fullmatch(service_name), service_name


# -- PrometheusRule ---------------------------------------------------------------
RULE_GROUP_KEYS = {
    "name",
    "interval",
    "rules",
    "partial_response_strategy",
    "limit",
    "query_offset",
    "labels",
}
RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}


def test_prometheus_rule_structure() -> None:
    (rule,) = _by_kind("PrometheusRule").values()
    assert set(rule["spec"]) == {"groups"}
    names = [g["name"] for g in rule["spec"]["groups"]]
    assert len(names) == len(set(names)), names
    for group in rule["spec"]["groups"]:
        assert set(group) <= RULE_GROUP_KEYS, set(group) - RULE_GROUP_KEYS
        assert group["rules"], group["name"]
        for r in group["rules"]:
            assert set(r) <= RULE_KEYS, set(r) - RULE_KEYS
            assert ("alert" in r) != ("record" in r), r
            assert isinstance(r["expr"], str) and r["expr"].strip()
            for value in [*(r.get("labels") or {}).values(), *(r.get("annotations") or {}).values()]:
                assert isinstance(value, str), f"{r.get('alert')}: labels and annotations are strings"


def test_prometheus_rule_carries_the_alert_rules_file() -> None:
    # One source of truth: deploy/monitoring/sync.py generates the PrometheusRule.
    (rule,) = _by_kind("PrometheusRule").values()
    assert rule["spec"]["groups"] == _alert_rule_groups()


# -- autoscaling ----------------------------------------------------------------------
SCALED_OBJECT_SPEC = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount",
    "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}  # fmt: skip
KAFKA_TRIGGER_METADATA = {
    "bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
    "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag", "partitionLimitation", "version", "sasl", "tls", "unsafeSsl",
}  # fmt: skip


def _autoscalers() -> list[tuple[str, dict[str, Any]]]:
    """(kind, scaleTargetRef) of every HPA and ScaledObject."""
    refs = [
        ("HorizontalPodAutoscaler", h["spec"]["scaleTargetRef"])
        for h in _by_kind("HorizontalPodAutoscaler").values()
    ]
    refs += [("ScaledObject", s["spec"]["scaleTargetRef"]) for s in _by_kind("ScaledObject").values()]
    return refs


def test_autoscalers_target_existing_deployments_once() -> None:
    deployments = _by_kind("Deployment")
    targets: dict[str, str] = {}
    for kind, ref in _autoscalers():
        assert ref.get("apiVersion", "apps/v1") == "apps/v1"
        assert ref.get("kind", "Deployment") == "Deployment"
        assert ref["name"] in deployments, f"{kind} targets unknown Deployment {ref['name']!r}"
        # KEDA creates its own HPA: two autoscalers on one Deployment fight.
        assert ref["name"] not in targets, f"{ref['name']}: scaled by {targets[ref['name']]} and {kind}"
        targets[ref["name"]] = kind
    assert targets == AUTOSCALED


@pytest.mark.parametrize("name", sorted(AUTOSCALED))
def test_autoscaled_deployments_leave_replicas_to_the_autoscaler(name: str) -> None:
    # A fixed spec.replicas would reset the autoscaler's choice on every apply.
    assert "replicas" not in _by_kind("Deployment")[name]["spec"]


def test_worker_scaled_object() -> None:
    scaled = _by_kind("ScaledObject")["moderation-worker"]
    spec = scaled["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC, set(spec) - SCALED_OBJECT_SPEC
    assert set(spec["scaleTargetRef"]) <= {"apiVersion", "kind", "name", "envSourceContainerName"}
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    # KEDA hands the behavior to the HPA it creates: validate it as one.
    hpa_config = spec["advanced"]["horizontalPodAutoscalerConfig"]
    assert set(spec["advanced"]) <= {"restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig"}
    assert set(hpa_config) <= {"name", "behavior"}
    kubernetes_validate.validate(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "keda-hpa-moderation-worker"},
            "spec": {
                "scaleTargetRef": spec["scaleTargetRef"],
                "maxReplicas": spec["maxReplicaCount"],
                "behavior": hpa_config["behavior"],
            },
        },
        K8S_VERSION,
        strict=True,
    )
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    assert set(metadata) <= KAFKA_TRIGGER_METADATA, set(metadata) - KAFKA_TRIGGER_METADATA
    # KEDA's trigger metadata is a map of strings.
    assert all(isinstance(v, str) for v in metadata.values()), metadata
    config = _by_kind("ConfigMap")["moderation-config"]["data"]
    assert metadata["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
    assert metadata["consumerGroup"] == config["CONSUMER_GROUP"]
    assert metadata["topic"] == config["UPLOADS_TOPIC"]
    assert int(metadata["lagThreshold"]) > 0
    assert metadata.get("offsetResetPolicy", "latest") in {"earliest", "latest"}
    # Replicas beyond the partition count would sit idle in the group.
    assert metadata.get("allowIdleConsumers", "false") == "false"


def test_worker_max_replicas_documented_against_partitions() -> None:
    text = (BASE_DIR / "worker-scaledobject.yaml").read_text(encoding="utf-8")
    assert re.search(r"maxReplicaCount must not exceed the partition count", text)


def test_web_hpa_scales_on_cpu_requests() -> None:
    hpa = _by_kind("HorizontalPodAutoscaler")["moderation-web"]
    spec = hpa["spec"]
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    (metric,) = spec["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # Utilization is a share of the request: the container must have one.
    web = _by_kind("Deployment")["moderation-web"]
    for _, c in _containers(web):
        assert "cpu" in c["resources"]["requests"], c["name"]
