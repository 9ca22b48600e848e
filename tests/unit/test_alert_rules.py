"""deploy/prometheus: the alert rules are valid, and each fires when it should and only then.

`promtool` comes from Debian's `prometheus` package (.ci/run installs it); without it this
module is skipped locally and fails in CI.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import IN_CI

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yaml"
RULE_TESTS = DEPLOY / "prometheus" / "tests.yaml"
DASHBOARD = DEPLOY / "grafana" / "eventrelay.json"
REQUIRED_ALERTS = {
    "EventRelayVendorParked",
    "EventRelayCircuitOpen",
    "EventRelayDeadLettersGrowing",
    "EventRelayOldestPendingTooOld",
    "EventRelayDeliveryFailureRatioHigh",
    "EventRelayNoLiveWorker",
    "EventRelaySchedulerNotTicking",
}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if IN_CI:
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return path


def _alerts() -> list[dict[str, object]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = subprocess.run(
        [_promtool(), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = {str(r["alert"]) for r in _alerts()}
    assert alerts == REQUIRED_ALERTS
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fires == alerts and quiet == alerts


def test_every_alert_says_what_to_do_and_the_readme_has_its_runbook_line() -> None:
    readme = (DEPLOY.parent / "README.md").read_text()
    for rule in _alerts():
        annotations = rule["annotations"]
        assert (
            isinstance(annotations, dict) and annotations["summary"] and annotations["description"]
        )
        assert f"`{rule['alert']}`" in readme, f"README has no runbook line for {rule['alert']}"


def test_the_dashboard_is_grafana_json_with_the_panels_operators_need() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for needed in ("deliveries per second", "latency", "backlog", "dead letters", "circuit"):
        assert needed in titles
    assert re.search(
        r"histogram_quantile\(0\.99, .*eventrelay_delivery_latency_seconds_bucket", exprs
    )
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"])
