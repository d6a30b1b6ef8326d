"""Paths and parsers shared by the monitoring tests: the alert rules, the
Grafana dashboard, the metric names defined in ``moderation/metrics.py`` and
the headings of ``docs/operations.md``."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "prometheus" / "moderation-rules.yaml"
RULES_TEST = MONITORING / "prometheus" / "moderation-rules.test.yaml"
DASHBOARD = MONITORING / "grafana" / "moderation-overview.json"
PROVISIONING = MONITORING / "grafana" / "provisioning"
SYNC_SCRIPT = MONITORING / "sync.py"
K8S_MONITORING = ROOT / "deploy" / "k8s" / "monitoring"
PROMETHEUS_RULE = ROOT / "deploy" / "k8s" / "base" / "prometheusrule.yaml"
METRICS_PY = ROOT / "moderation" / "metrics.py"
OPERATIONS_MD = ROOT / "docs" / "operations.md"

RUNBOOK_BASE = "https://github.com/moderation/moderation/blob/main/docs/operations.md#"
SEVERITIES = {"critical", "warning", "info"}
# Metrics Prometheus itself attaches to every target.
PROMETHEUS_BUILTINS = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

PROMTOOL_TIMEOUT_S = 60


# -- alert rules ---------------------------------------------------------------------
def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def rule_groups() -> list[dict[str, Any]]:
    return load_yaml(RULES)["groups"]


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def promtool(executable: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [executable, *args], cwd=cwd, capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S
    )


def sync_module() -> ModuleType:
    """deploy/monitoring/sync.py, imported from its path (deploy/ is no package)."""
    spec = importlib.util.spec_from_file_location("monitoring_sync", SYNC_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- metric names --------------------------------------------------------------------
_DEFINITION = re.compile(
    r"\b(Counter|Gauge|Histogram|Summary|CounterMetricFamily|GaugeMetricFamily|HistogramMetricFamily|_gauge)"
    r"\(\s*\"(moderation_[a-z0-9_]+)\""
)
_KIND = {
    "_gauge": "gauge",  # metrics.py's helper for the database gauges
    "Counter": "counter",
    "CounterMetricFamily": "counter",
    "Gauge": "gauge",
    "GaugeMetricFamily": "gauge",
    "Histogram": "histogram",
    "HistogramMetricFamily": "histogram",
    "Summary": "summary",
}


def defined_metrics() -> dict[str, str]:
    """Every metric moderation/metrics.py defines, with its type."""
    text = METRICS_PY.read_text(encoding="utf-8")
    return {name: _KIND[cls] for cls, name in _DEFINITION.findall(text)}


def exported_series_names() -> set[str]:
    """The series names Prometheus sees for those metrics (histograms add
    _bucket, _sum and _count; prometheus-client counters also _created)."""
    names: set[str] = set()
    for name, kind in defined_metrics().items():
        names.add(name)
        if kind in {"histogram", "summary"}:
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
        if kind == "counter":
            names.add(name.removesuffix("_total") + "_created")
    return names


_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`")
_IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_:])([A-Za-z_:][A-Za-z0-9_:]*)")


def metric_names_in(expr: str) -> set[str]:
    """``moderation_*`` metric names (and Prometheus's own, such as ``up``) an
    expression reads. String literals (label values) are ignored."""
    bare = _STRING.sub('""', expr)
    names = set()
    for token in _IDENTIFIER.findall(bare):
        if token.startswith("moderation_") or token in PROMETHEUS_BUILTINS:
            names.add(token)
    return names


def query_templates(text: str) -> list[str]:
    """PromQL queries inside `query` calls of an annotation template."""
    return re.findall(r'printf\s+"([^"]*)"[^}]*\|\s*query', text)


# -- docs ----------------------------------------------------------------------------
def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(path: Path = OPERATIONS_MD) -> list[tuple[int, str]]:
    """(level, text) of every ATX heading outside fenced code blocks."""
    found = []
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if match and not fenced:
            found.append((len(match.group(1)), match.group(2)))
    return found


def anchors(path: Path = OPERATIONS_MD) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for _, text in headings(path):
        anchor = github_anchor(text)
        if anchor in seen:
            seen[anchor] += 1
            anchor = f"{anchor}-{seen[anchor]}"
        else:
            seen[anchor] = 0
        result.add(anchor)
    return result


def section(title: str, path: Path = OPERATIONS_MD) -> str:
    """The text of a ``## title`` section, up to the next level-2 heading."""
    text = path.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"{path.name}: no '## {title}' section"
    return match.group(1)
