"""The pacer's deployment files: alerts (promtool), dashboard and manifests name real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from pacing.metrics import PacerMetrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"


def exported_names() -> set[str]:
    registry = CollectorRegistry()
    PacerMetrics(registry)
    names = set()
    for metric in registry.collect():
        for sample in metric.samples:
            names.add(sample.name)
        names.add(metric.name)
    return names | {n + "_total" for n in names} | {n + "_bucket" for n in names}


def pacing_names(text: str) -> set[str]:
    return set(re.findall(r"\bpacing_[a-z_]+", text))


def test_alerts_and_dashboard_only_use_metrics_the_pacer_exports() -> None:
    exported = exported_names()
    alerts = (PROMETHEUS / "alerts.yml").read_text()
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "rtbfleet-dashboard.json").read_text())
    exprs = " ".join(
        t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if "expr" in t
    )
    used = pacing_names(alerts) | pacing_names(exprs)
    assert {"pacing_plan_micros", "pacing_leases_expired_total", "pacing_leader"} <= used
    assert used <= exported, used - exported


def test_the_pacer_is_deployed_like_the_cache_watcher() -> None:
    k8s = ROOT / "deploy" / "k8s"
    assert "pacer.yaml" in (k8s / "kustomization.yaml").read_text()
    docs = list(yaml.safe_load_all((k8s / "pacer.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["run", "pacing"]
    assert any(d["kind"] == "PodDisruptionBudget" for d in docs)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_alert_rules_pass_their_promtool_tests() -> None:
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run(
            ["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
