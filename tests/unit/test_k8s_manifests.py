"""Offline checks of the kustomize base in ``deploy/k8s/base``.

Every object is validated against the upstream Kubernetes JSON schemas shipped
by the ``kubernetes-validate`` package, in *strict* mode (``additionalProperties:
false``), so a misspelt or unknown field fails the test. On top of the schema,
the test enforces the project's own deployment conventions (requests, probes,
non-root, labels, wiring between objects).
"""

from __future__ import annotations

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
@pytest.mark.parametrize("item", OBJECTS, ids=_obj_id)
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


def test_worker_metrics_port_and_scrape_annotations() -> None:
    worker = _by_kind("Deployment")["moderation-worker"]
    (c,) = worker["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 9100}
    ann = worker["spec"]["template"]["metadata"].get("annotations") or {}
    assert ann.get("prometheus.io/scrape") == "true"
    assert ann.get("prometheus.io/port") == "9100"
    assert ann.get("prometheus.io/path", "/metrics") == "/metrics"
    env = {e["name"]: e.get("value") for e in c.get("env") or []}
    assert env.get("METRICS_PORT", "9100") == "9100"


def test_web_service_targets_web_http_port() -> None:
    svc = _by_kind("Service")["moderation-web"]
    web = _by_kind("Deployment")["moderation-web"]
    template_labels = web["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= template_labels.items()
    (c,) = web["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert container_ports == {"http": 8080}
    (port,) = svc["spec"]["ports"]
    assert port["port"] == 80
    assert port["targetPort"] in ("http", 8080)


def test_migrate_job_does_not_restart_forever() -> None:
    job = _by_kind("Job")["moderation-db-upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}
    assert job["spec"].get("backoffLimit") is not None
