"""The monitoring kit in docs/ against a real Prometheus (Debian's package): the alert rules
and the scrape configuration load, Prometheus scrapes a running server with its token, every
rule evaluates, and every query of the Grafana dashboard runs and names metrics we export."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.utils import timezone

from messaging import problems
from messaging import services as messaging
from tests.conftest import missing_tool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "prometheus" / "alerts.yml"
CONFIG = ROOT / "docs" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "docs" / "grafana" / "sms-gateway.json"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


def _tools() -> None:
    if PROMETHEUS and PROMTOOL:
        return
    missing_tool("prometheus is not installed")


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [
        (panel["title"], target["expr"]) for panel in panels for target in panel.get("targets", [])
    ]


def test_the_dashboard_is_grafana_json_with_a_prometheus_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "sms-gateway"
    (variable,) = dashboard["templating"]["list"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    assert len(dashboard_queries()) >= 15


def test_promtool_accepts_the_rules_and_the_scrape_configuration(tmp_path):
    _tools()
    checked = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The configuration as shipped, with its token file and rules where this test put them.
    token = tmp_path / "token"
    token.write_text("t")
    shutil.copy(RULES, tmp_path / "alerts.yml")
    text = CONFIG.read_text().replace("/run/secrets/metrics_token", str(token))
    (tmp_path / "prometheus.yml").write_text(text)
    checked = subprocess.run(
        [str(PROMTOOL), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # a bad query: 400 with its error
        return json.loads(exc.read())


def _wait(condition: Any, what: str, seconds: float = 90.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            found = condition()
        except urllib.error.URLError:  # not listening yet
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_prometheus_scrapes_the_server_evaluates_every_rule_and_runs_every_panel(
    live_server, settings, tmp_path, account, make_device
):
    _tools()
    settings.METRICS_TOKEN = "scraper-token-for-the-test"
    # Something to report: a phone with waiting SMS, silent long enough to be a problem.
    device = make_device(account)
    messaging.submit(account, [messaging.OutgoingSms(device.pk, "+4915752982212", "Hi")])
    problems.sweep(timezone.now() + timedelta(minutes=11))

    config = yaml.safe_load(CONFIG.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    (token := tmp_path / "token").write_text(settings.METRICS_TOKEN)
    (web,) = [job for job in config["scrape_configs"] if job["job_name"] == "sms-gateway"]
    web["authorization"]["credentials_file"] = str(token)
    web["static_configs"] = [{"targets": [live_server.url.removeprefix("http://")]}]
    config["scrape_configs"] = [web]  # the workers' job needs compose's names
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        up = _wait(
            lambda: (
                (_api(base, "/api/v1/query", query='up{job="sms-gateway"}') or {})
                .get("data", {})
                .get("result")
            ),
            "the first scrape",
        )
        assert up[0]["value"][1] == "1", (tmp_path / "prometheus.log").read_text()
        silent = _api(base, "/api/v1/query", query="smsgateway_problems_open")
        by_kind = {r["metric"]["kind"]: r["value"][1] for r in silent["data"]["result"]}
        assert by_kind["device_silent"] == "1"

        def rules_evaluated() -> list[dict[str, Any]] | None:
            groups = _api(base, "/api/v1/rules")["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return rules if rules and all(r["health"] != "unknown" for r in rules) else None

        rules = _wait(rules_evaluated, "every rule evaluated")
        assert {r["name"]: r["health"] for r in rules} == {r["name"]: "ok" for r in rules}

        def alerting() -> set[str]:
            groups = _api(base, "/api/v1/rules")["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return {r["name"] for r in rules if r["state"] in ("pending", "firing")}

        # The open problem is seen by its alert (pending for its 5 minutes).
        assert "FleetProblemOpen" in _wait(
            lambda: "FleetProblemOpen" in alerting() and alerting(), "the problem's alert"
        )

        for title, expr in dashboard_queries():
            answer = _api(base, "/api/v1/query", query=expr)
            assert answer["status"] == "success", (title, expr, answer)
        waiting = next(e for t, e in dashboard_queries() if t == "SMS waiting / with phones")
        queue = _api(base, "/api/v1/query", query=waiting)
        assert queue["data"]["result"][0]["value"][1] == "1"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.mark.django_db
def test_the_dashboard_names_only_metrics_that_exist(client):
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    exported = {
        f"{family.name}{suffix}"
        for family in text_string_to_metric_families(text)
        for suffix in ("", "_total", "_count", "_sum", "_bucket")
    }
    named = {
        name for _, expr in dashboard_queries() for name in re.findall(r"smsgateway_[a-z_]+", expr)
    }
    assert named and named <= exported, named - exported
