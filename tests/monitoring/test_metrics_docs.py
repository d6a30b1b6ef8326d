"""The metrics table of docs/operations.md lists exactly the metrics that
moderation/metrics.py defines, each with its type."""

from __future__ import annotations

import re

from tests.monitoring import support


def _documented() -> dict[str, str]:
    rows = re.findall(r"^\| `(moderation_[a-z0-9_]+)` \| ([a-z]+)", support.section("Metrics"), flags=re.M)
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), f"listed twice: {names}"
    return dict(rows)


def test_metrics_table_lists_every_metric() -> None:
    defined = support.defined_metrics()
    assert defined, "no metric found in moderation/metrics.py"
    documented = _documented()
    assert sorted(set(defined) - set(documented)) == [], "defined but not documented"
    assert sorted(set(documented) - set(defined)) == [], "documented but not defined"


def test_metrics_table_types() -> None:
    defined = support.defined_metrics()
    for name, kind in _documented().items():
        assert kind == defined[name], f"{name}: documented as {kind}, defined as {defined[name]}"


def test_suggested_alerts_block_is_gone() -> None:
    # The rules file is the only place alert expressions live.
    assert "alert:" not in support.section("Metrics")
