"""The alert rules in deploy/monitoring/prometheus: valid for promtool, unit
tested with `promtool test rules` (a firing and a quiet case for every alert),
documented (severity, summary, description, a runbook that exists) and in
step with the PrometheusRule of the kustomize base."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring import support

ALERTS = support.alerts()
ALERT_NAMES = [rule["alert"] for rule in ALERTS]


def _ids(rule: dict[str, Any]) -> str:
    return str(rule["alert"])


# -- promtool ------------------------------------------------------------------------
def test_promtool_check_rules(promtool: str) -> None:
    result = support.promtool(promtool, "check", "rules", str(support.RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_check_prometheusrule_groups(promtool: str, tmp_path: Path) -> None:
    # The PrometheusRule's spec is itself a rules file: check it the same way.
    spec = support.load_yaml(support.PROMETHEUS_RULE)["spec"]
    rules_file = tmp_path / "prometheusrule-spec.yaml"
    rules_file.write_text(yaml.safe_dump(spec), encoding="utf-8")
    result = support.promtool(promtool, "check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool: str) -> None:
    result = support.promtool(
        promtool, "test", "rules", support.RULES_TEST.name, cwd=support.RULES_TEST.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# -- coverage of the unit tests ------------------------------------------------------
def _alert_cases() -> dict[str, dict[str, int]]:
    """alert -> {"firing": n, "quiet": n} over every alert_rule_test."""
    cases: dict[str, dict[str, int]] = {}
    for test in support.load_yaml(support.RULES_TEST)["tests"]:
        for case in test.get("alert_rule_test") or []:
            counts = cases.setdefault(case["alertname"], {"firing": 0, "quiet": 0})
            counts["firing" if case.get("exp_alerts") else "quiet"] += 1
    return cases


def test_rule_tests_load_the_rules_file() -> None:
    spec = support.load_yaml(support.RULES_TEST)
    assert spec["rule_files"] == [support.RULES.name]


@pytest.mark.parametrize("name", ALERT_NAMES)
def test_every_alert_has_a_firing_and_a_quiet_case(name: str) -> None:
    counts = _alert_cases().get(name, {"firing": 0, "quiet": 0})
    assert counts["firing"] >= 1, f"{name}: no unit test where it fires"
    assert counts["quiet"] >= 1, f"{name}: no unit test where it stays quiet"


def test_unit_tests_name_only_existing_alerts() -> None:
    assert set(_alert_cases()) <= set(ALERT_NAMES)


def test_firing_cases_check_labels_and_every_annotation() -> None:
    for test in support.load_yaml(support.RULES_TEST)["tests"]:
        for case in test.get("alert_rule_test") or []:
            rule = next(r for r in ALERTS if r["alert"] == case["alertname"])
            for expected in case.get("exp_alerts") or []:
                where = f"{test.get('name')!r} at {case['eval_time']}"
                assert expected["exp_labels"]["severity"] == rule["labels"]["severity"], where
                assert set(expected.get("exp_annotations") or {}) == set(rule["annotations"]), where


# -- every alert documented ----------------------------------------------------------
def test_alert_names_unique_and_prefixed() -> None:
    assert len(ALERT_NAMES) == len(set(ALERT_NAMES)), ALERT_NAMES
    for name in ALERT_NAMES:
        assert re.fullmatch(r"Moderation[A-Z][A-Za-z]+", name), name


def test_only_alerting_rules() -> None:
    for group in support.rule_groups():
        for rule in group["rules"]:
            assert "alert" in rule, f"{group['name']}: recording rule {rule.get('record')!r}"


@pytest.mark.parametrize("rule", ALERTS, ids=_ids)
def test_alert_has_severity_and_annotations(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in support.SEVERITIES
    annotations = rule["annotations"]
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations.get(key) or "").strip(), f"{rule['alert']}: no {key}"


@pytest.mark.parametrize("rule", ALERTS, ids=_ids)
def test_runbook_url_is_a_heading_of_operations_md(rule: dict[str, Any]) -> None:
    url = rule["annotations"]["runbook_url"]
    assert url.startswith(support.RUNBOOK_BASE), url
    anchor = url.removeprefix(support.RUNBOOK_BASE)
    assert anchor == support.github_anchor(rule["alert"]), f"{rule['alert']}: anchor {anchor!r}"
    assert anchor in support.anchors(), f"docs/operations.md has no heading for #{anchor}"


def test_runbook_section_has_one_heading_per_alert() -> None:
    body = support.section("Alerts and runbooks")
    runbooks = re.findall(r"^### (.+?)\s*$", body, flags=re.M)
    assert sorted(runbooks) == sorted(ALERT_NAMES)


@pytest.mark.parametrize("rule", ALERTS, ids=_ids)
def test_alert_reads_only_defined_metrics(rule: dict[str, Any]) -> None:
    exported = support.exported_series_names() | support.PROMETHEUS_BUILTINS
    queries = [rule["expr"]]
    for text in rule["annotations"].values():
        queries += support.query_templates(text)
    for query in queries:
        names = support.metric_names_in(query)
        assert names, f"{rule['alert']}: no metric in {query!r}"
        unknown = names - exported
        assert not unknown, f"{rule['alert']}: not defined in moderation/metrics.py: {sorted(unknown)}"


def test_gauges_read_by_the_web_role_are_never_summed_across_replicas() -> None:
    # Every web replica reports the same database-wide figures; a bare sum
    # over them grows with the replica count.
    web_gauges = ("moderation_queue_items", "moderation_queue_sla_items", "moderation_outbox_")
    for rule in ALERTS:
        expr = " ".join(rule["expr"].split())
        for match in re.finditer(r"sum by \([^)]*\) \(\s*(\w+)", expr):
            assert not match.group(1).startswith(web_gauges), f"{rule['alert']}: {expr}"


# -- one source of truth -------------------------------------------------------------
def test_prometheusrule_carries_the_same_groups() -> None:
    rule = support.load_yaml(support.PROMETHEUS_RULE)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == support.rule_groups()


def test_generated_files_are_up_to_date() -> None:
    stale = support.sync_module().stale()
    assert not stale, f"out of date (run python deploy/monitoring/sync.py): {stale}"
