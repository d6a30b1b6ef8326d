"""Keep the generated monitoring files in step with their sources.

Sources (edit these):
  deploy/monitoring/prometheus/moderation-rules.yaml   alert rules (Prometheus rules file)
  deploy/monitoring/grafana/moderation-overview.json   Grafana dashboard

Generated (never edit by hand):
  deploy/k8s/base/prometheusrule.yaml                  the same rule groups as a PrometheusRule
  deploy/k8s/monitoring/moderation-overview.json       the dashboard, inside the kustomization
                                                       that turns it into a ConfigMap (kustomize
                                                       reads no file outside its directory)

Usage:
  python deploy/monitoring/sync.py           rewrite the generated files
  python deploy/monitoring/sync.py --check   exit 1 if any of them is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/monitoring/prometheus/moderation-rules.yaml"
DASHBOARD = ROOT / "deploy/monitoring/grafana/moderation-overview.json"
PROMETHEUS_RULE = ROOT / "deploy/k8s/base/prometheusrule.yaml"
DASHBOARD_COPY = ROOT / "deploy/k8s/monitoring/moderation-overview.json"

PROMETHEUS_RULE_HEADER = """\
# GENERATED from deploy/monitoring/prometheus/moderation-rules.yaml by
# deploy/monitoring/sync.py: edit that file and run the script, never this one.
#
# The moderation alert rules for the Prometheus Operator. Add the label your
# Prometheus's ruleSelector expects (e.g. `release: kube-prometheus-stack`) in
# an overlay. Runbooks: docs/operations.md, "Alerts and runbooks".
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: moderation
  labels:
    app.kubernetes.io/name: moderation
spec:
"""


def render_prometheus_rule(rules_text: str) -> str:
    """The PrometheusRule manifest carrying the rules file's groups.

    The rules file's text from its ``groups:`` line on is indented under
    ``spec:``, so comments next to the rules are kept."""
    lines = rules_text.splitlines()
    try:
        start = lines.index("groups:")
    except ValueError:
        raise SystemExit(f"{RULES}: no top-level 'groups:' line") from None
    body = [("  " + line) if line.strip() else "" for line in lines[start:]]
    return PROMETHEUS_RULE_HEADER + "\n".join(body).rstrip("\n") + "\n"


def expected() -> dict[Path, str]:
    """Every generated file and the text it must have."""
    return {
        PROMETHEUS_RULE: render_prometheus_rule(RULES.read_text(encoding="utf-8")),
        DASHBOARD_COPY: DASHBOARD.read_text(encoding="utf-8"),
    }


def stale() -> list[Path]:
    """Generated files that are missing or differ from what their sources give."""
    return [
        path
        for path, text in expected().items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report out-of-date files")
    args = parser.parse_args(argv)
    if args.check:
        out_of_date = stale()
        for path in out_of_date:
            print(f"out of date: {path.relative_to(ROOT)} (run: python deploy/monitoring/sync.py)")
        return 1 if out_of_date else 0
    for path, text in expected().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
