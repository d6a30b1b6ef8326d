"""The Grafana dashboard in deploy/monitoring/grafana: well-formed, every
panel placed and titled, every query reading metrics that moderation/metrics.py
defines and accepted by promtool; its provisioning files; and the kustomization
that ships it to the Grafana sidecar as a ConfigMap."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.monitoring import support

DASHBOARD = json.loads(support.DASHBOARD.read_text(encoding="utf-8"))
PANELS: list[dict[str, Any]] = DASHBOARD["panels"]
QUERY_PANELS = [p for p in PANELS if p.get("type") != "row"]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# What the dashboard must show (one or more panels reading each metric).
REQUIRED_METRICS = {
    "moderation_events_consumed_total": "throughput by outcome",
    "moderation_stage_duration_seconds_bucket": "stage latency quantiles",
    "moderation_queue_items": "queue depth by tier",
    "moderation_queue_sla_items": "SLA near/breached",
    "moderation_decisions_total": "decisions by source",
    "moderation_dead_letters_total": "dead letters by error class",
    "moderation_bank_entries": "bank sizes",
    "moderation_bank_index_entries": "per-worker bank index",
    "moderation_consumer_lag_messages": "consumer lag",
    "moderation_outbox_pending": "outbox pending",
    "moderation_model_inference_seconds_bucket": "classifier latency",
}

# Grafana's own variables, replaced by a plausible value before promtool sees
# an expression.
GRAFANA_VARIABLES = {"__rate_interval": "2m", "__interval": "30s", "__range": "1h"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
MAX_CONFIGMAP_BYTES = 256 * 1024  # kubectl apply's last-applied annotation limit


def _targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(panel, target) for panel in QUERY_PANELS for target in panel["targets"]]


def _target_id(item: tuple[dict[str, Any], dict[str, Any]]) -> str:
    panel, target = item
    return f"{panel['id']}{target['refId']}"


def _variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in DASHBOARD["templating"]["list"]}


def _substitute(expr: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name in GRAFANA_VARIABLES:
            return GRAFANA_VARIABLES[name]
        assert name in _variables(), f"undefined dashboard variable ${name} in {expr!r}"
        return ".*"

    return _VARIABLE.sub(replace, expr)


# -- the dashboard ---------------------------------------------------------------------
def test_dashboard_identity() -> None:
    assert DASHBOARD["uid"] == "moderation-overview"
    assert DASHBOARD["title"]
    assert 36 <= DASHBOARD["schemaVersion"] <= 41
    # Provisioned dashboards must not carry a database id.
    assert DASHBOARD.get("id") is None


def test_datasource_variable() -> None:
    variable = _variables()["datasource"]
    assert variable["type"] == "datasource"
    assert variable["query"] == "prometheus"


def test_every_query_uses_the_datasource_variable() -> None:
    for panel, target in _targets():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]
    for variable in _variables().values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]


def test_panel_ids_unique() -> None:
    ids = [p["id"] for p in PANELS]
    assert all(isinstance(i, int) for i in ids), ids
    assert len(ids) == len(set(ids)), ids


@pytest.mark.parametrize("panel", PANELS, ids=lambda p: str(p.get("title")))
def test_panel_has_title_and_grid_position(panel: dict[str, Any]) -> None:
    assert str(panel.get("title") or "").strip()
    grid = panel["gridPos"]
    assert {"h", "w", "x", "y"} <= grid.keys()
    assert all(isinstance(grid[k], int) and grid[k] >= 0 for k in "hwxy"), grid
    assert grid["h"] > 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, grid


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in PANELS:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize("panel", QUERY_PANELS, ids=lambda p: str(p.get("title")))
def test_panel_has_queries(panel: dict[str, Any]) -> None:
    targets = panel.get("targets") or []
    assert targets, f"{panel['title']}: no targets"
    ref_ids = [t["refId"] for t in targets]
    assert len(ref_ids) == len(set(ref_ids)), ref_ids
    for target in targets:
        assert str(target.get("expr") or "").strip(), f"{panel['title']} {target['refId']}: no expr"


def test_dashboard_covers_the_required_metrics() -> None:
    read = set().union(*(support.metric_names_in(t["expr"]) for _, t in _targets()))
    missing = {name: what for name, what in REQUIRED_METRICS.items() if name not in read}
    assert not missing, f"no panel shows: {missing}"


@pytest.mark.parametrize("item", _targets(), ids=_target_id)
def test_query_reads_only_defined_metrics(item: tuple[dict[str, Any], dict[str, Any]]) -> None:
    panel, target = item
    names = support.metric_names_in(target["expr"])
    assert names, f"{panel['title']}: no moderation metric in {target['expr']!r}"
    unknown = names - support.exported_series_names()
    assert not unknown, f"{panel['title']}: not defined in moderation/metrics.py: {sorted(unknown)}"


def test_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    # promtool has no "check this expression" command: each query becomes a
    # recording rule, and `check rules` parses them all.
    rules = [
        {"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": _substitute(target["expr"])}
        for panel, target in _targets()
    ]
    rules_file = tmp_path / "dashboard-queries.yaml"
    rules_file.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8"
    )
    result = support.promtool(promtool, "check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


# -- provisioning --------------------------------------------------------------------
def test_dashboard_provider() -> None:
    (provider,) = support.load_yaml(support.PROVISIONING / "dashboards" / "moderation.yaml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


def test_datasource_provisioning() -> None:
    sources = support.load_yaml(support.PROVISIONING / "datasources" / "prometheus.yaml")["datasources"]
    assert [s["type"] for s in sources] == ["prometheus"]
    assert sources[0]["url"].startswith("http")


# -- the ConfigMap for the Grafana sidecar -----------------------------------------------
def _kustomization() -> dict[str, Any]:
    return support.load_yaml(support.K8S_MONITORING / "kustomization.yaml")


def test_k8s_copy_of_the_dashboard_is_identical() -> None:
    copy = support.K8S_MONITORING / support.DASHBOARD.name
    assert copy.read_bytes() == support.DASHBOARD.read_bytes(), "run python deploy/monitoring/sync.py"


def test_configmap_generator_for_the_sidecar() -> None:
    kustomization = _kustomization()
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    (generator,) = kustomization["configMapGenerator"]
    options = generator["options"]
    assert options["labels"]["grafana_dashboard"] == "1"
    assert options["labels"]["app.kubernetes.io/name"] == "moderation"
    assert options["disableNameSuffixHash"] is True
    for entry in generator["files"]:
        path = support.K8S_MONITORING / entry.split("=", 1)[-1]
        # kustomize's load restrictor: files must lie in or below the kustomization.
        assert path.resolve().is_relative_to(support.K8S_MONITORING.resolve()), entry
        assert path.is_file(), entry
        json.loads(path.read_text(encoding="utf-8"))


def test_generated_configmap_is_valid() -> None:
    # What `kustomize build` makes of the generator, checked like the base's objects.
    (generator,) = _kustomization()["configMapGenerator"]
    options = generator["options"]
    data = {}
    for entry in generator["files"]:
        key, _, name = entry.rpartition("=")
        data[key or name] = (support.K8S_MONITORING / name).read_text(encoding="utf-8")
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": generator["name"],
            "labels": options["labels"],
            "annotations": options.get("annotations", {}),
        },
        "data": data,
    }
    kubernetes_validate.validate(configmap, "1.30.0", strict=True)
    assert len(json.dumps(configmap)) < MAX_CONFIGMAP_BYTES
