"""The Kubernetes manifests (scripts/kubernetes): every overlay renders with kubectl's
kustomize, validates strictly against the Kubernetes schemas (kubernetes-validate, the
oldest and the newest version it knows), and says what the gateway needs: the probes on
paths the app serves, the phones' long-lived connections routed to streams as the HTTPS
front does it, configuration the settings read, one beat, migrations before web.
(checkov lints the same output: scripts/lint-kubernetes.sh.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from django.urls import resolve

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZE = ROOT / "scripts" / "kubernetes"
TARGETS = ["base", "overlays/small", "overlays/large"]
VERSIONS = ["1.28.0", kubernetes_validate.latest_version()]

if shutil.which("kubectl") is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("kubectl is needed to render the Kubernetes manifests")
    pytest.skip("kubectl is not installed", allow_module_level=True)


def render(target: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(KUSTOMIZE / target)],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {target: render(target) for target in TARGETS}


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_validates_strictly(rendered, target, version):
    for doc in rendered[target]:
        kubernetes_validate.validate(doc, version, strict=True)


def test_a_schema_error_is_caught():
    (web,) = [d for d in render("base") if d["metadata"]["name"] == "sms-gateway-web"][:1]
    web["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(web, VERSIONS[-1], strict=True)


@pytest.mark.parametrize("target", TARGETS)
def test_the_workloads_are_what_the_gateway_needs(rendered, target):
    docs = rendered[target]
    deployments = of_kind(docs, "Deployment")
    assert set(deployments) == {f"sms-gateway-{n}" for n in
                                ("web", "streams", "worker", "webhooks", "beat")}  # fmt: skip
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["resources"]["requests"] and container["resources"]["limits"], name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        refs = [next(iter(source.values()))["name"] for source in container["envFrom"]]
        assert refs[1] == "sms-gateway" and refs[0].startswith("sms-gateway-"), name
        assert "livenessProbe" in container, name
    beat = deployments["sms-gateway-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    for name in ("sms-gateway-web", "sms-gateway-streams"):
        pod = deployments[name]["spec"]["template"]["spec"]
        (wait,) = pod["initContainers"]
        assert "manage.py migrate --check" in " ".join(wait["command"])
        container = pod["containers"][0]
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            assert container[probe]["httpGet"]["path"] == path
            resolve(path)  # the app serves it
    (job,) = of_kind(docs, "Job").values()
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-2:] == [
        "migrate",
        "--noinput",
    ]
    # Every ConfigMap key is a setting the gateway reads.
    settings_source = (ROOT / "gateway" / "settings.py").read_text()
    (config,) = of_kind(docs, "ConfigMap").values()
    for key in config["data"]:
        assert f'"{key}"' in settings_source, key


@pytest.mark.parametrize("target", TARGETS)
def test_disruption_budgets_autoscaler_and_services_select_real_pods(rendered, target):
    docs = rendered[target]
    deployments = of_kind(docs, "Deployment")
    labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]

    def selects(selector: dict[str, str]) -> int:
        return sum(all(lab.get(k) == v for k, v in selector.items()) for lab in labels)

    for budget in of_kind(docs, "PodDisruptionBudget").values():
        assert selects(budget["spec"]["selector"]["matchLabels"]) == 1
    for service in of_kind(docs, "Service").values():
        assert selects(service["spec"]["selector"]) == 1
    (hpa,) = of_kind(docs, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_the_ingress_routes_like_the_https_front(rendered):
    """The paths Caddy sends to streams (scripts/Caddyfile) go to streams here too."""
    caddy = (ROOT / "scripts" / "Caddyfile").read_text()
    pattern = re.search(r"@streams path_regexp streams (\S+)", caddy)
    assert pattern is not None
    streams = re.compile(pattern.group(1))
    (ingress,) = of_kind(rendered["overlays/small"], "Ingress").values()
    for rule in ingress["spec"]["rules"]:
        for entry in rule["http"]["paths"]:
            backend = entry["backend"]["service"]["name"]
            if entry["path"] == "/":
                assert backend == "sms-gateway-web"
            else:
                assert streams.match(entry["path"]) and backend == "sms-gateway-streams"
    routed = {e["path"] for r in ingress["spec"]["rules"] for e in r["http"]["paths"]}
    assert routed >= {"/api/mobile/v1/events", "/api/device/v1/poll"}


def test_the_large_overlay_is_larger(rendered):
    small = of_kind(rendered["overlays/small"], "HorizontalPodAutoscaler")["sms-gateway-web"]
    large = of_kind(rendered["overlays/large"], "HorizontalPodAutoscaler")["sms-gateway-web"]
    assert large["spec"]["maxReplicas"] > small["spec"]["maxReplicas"]
    for target in ("overlays/small", "overlays/large"):
        namespaces = {d["metadata"].get("namespace") for d in rendered[target]
                      if d["kind"] != "Namespace"}  # fmt: skip
        assert namespaces == {"sms-gateway"}


def test_every_container_starts_code_that_exists(rendered):
    from tests.test_deployment import _check_command, _command_words

    for doc in rendered["overlays/large"]:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            _check_command(_command_words(container["command"]))
