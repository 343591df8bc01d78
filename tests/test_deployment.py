"""docker-compose.yml, the Dockerfile and the Procfile name only things that exist.

Docker cannot run here, so this reads the files and checks every service, command,
module and variable they mention against the code.
"""

import importlib
import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = (ROOT / "gateway" / "settings.py").read_text()
READ_VARIABLES = set(re.findall(r'env_(?:str|bool|int|list|choice)\(\s*"([A-Z_]+)"', SETTINGS))


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _command_words(command: str | list[str]) -> list[str]:
    words = shlex.split(command) if isinstance(command, str) else list(command)
    # sh -c "a && exec b ...": the words of the script itself.
    return shlex.split(words[2]) if words[:2] == ["sh", "-c"] else words


def _check_command(words: list[str]) -> None:
    """Every program the command starts points at code that exists."""
    text = " ".join(words)
    for module in re.findall(r"(?:gunicorn|uvicorn) ([\w.:]+)", text):
        module_name, _, attr = module.partition(":")
        assert hasattr(importlib.import_module(module_name), attr or "application"), module
    for config in re.findall(r"python:([\w.]+)", text):
        importlib.import_module(config)
    for app in re.findall(r"celery -A ([\w.]+)", text):
        assert importlib.import_module(app).celery_app is not None
    for sub in re.findall(r"celery -A [\w.]+ (\w+)", text):
        assert sub in {"worker", "beat", "inspect"}, sub
    if "manage.py" in text:
        assert (ROOT / "manage.py").exists()
        from django.core.management import get_commands

        for name in re.findall(r"manage\.py (\w+)", text):
            assert name in get_commands(), name


MONITORING = {"prometheus", "grafana"}


def test_compose_has_the_production_services_with_health_checks():
    services = _compose()["services"]
    assert set(services) - MONITORING == {
        "postgres", "redis", "web", "streams", "caddy", "worker", "webhooks", "beat"
    }  # fmt: skip
    for name, service in services.items():
        if name not in MONITORING:
            assert "healthcheck" in service, f"{name} has no health check"
            assert "profiles" not in service, f"{name} must start with a plain `up`"
    assert any("pgdata" in v for v in services["postgres"]["volumes"])


def test_the_monitoring_profile_scrapes_the_gateway_and_provisions_its_dashboard():
    compose = _compose()
    services = compose["services"]
    for name in MONITORING:
        assert services[name]["profiles"] == ["monitoring"], name
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
        # Reachable from the host's loopback only.
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"]), name
    prometheus_mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    config = yaml.safe_load((ROOT / "docs/prometheus/prometheus.yml").read_text())
    assert (
        f"--config.file={prometheus_mounts['./docs/prometheus/prometheus.yml']}"
        in (services["prometheus"]["command"])
    )
    rules_dir = Path(prometheus_mounts["./docs/prometheus/alerts.yml"]).parent
    assert [str(rules_dir / f) for f in config["rule_files"]] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    web = jobs["sms-gateway"]
    # The scraper's token is the gateway's METRICS_TOKEN, handed over as a compose secret.
    assert compose["secrets"]["metrics_token"] == {"environment": "METRICS_TOKEN"}
    assert services["prometheus"]["secrets"] == ["metrics_token"]
    assert web["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
    assert web["metrics_path"] == "/metrics"
    web_port = _command_words(services["web"]["command"])
    bind = next(w for w in web_port if w.startswith("0.0.0.0:"))
    assert web["static_configs"][0]["targets"] == [f"web:{bind.split(':')[1]}"]
    (workers,) = jobs["sms-gateway-workers"]["dns_sd_configs"]
    assert set(workers["names"]) == {"worker", "webhooks"}
    assert workers["port"] == services["worker"]["environment"]["METRICS_WORKER_PORT"]
    grafana = services["grafana"]
    grafana_mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    provisioning = ROOT / "docs/grafana/provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    (provider,) = yaml.safe_load((provisioning / "dashboards/sms-gateway.yml").read_text())[
        "providers"
    ]
    dashboard = grafana_mounts["./docs/grafana/sms-gateway.json"]
    assert str(Path(dashboard).parent) == provider["options"]["path"]
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == dashboard


def test_compose_commands_start_code_that_exists():
    services = _compose()["services"]
    for name in ("web", "streams", "worker", "webhooks", "beat"):
        _check_command(_command_words(services[name]["command"]))
    # webhook deliveries have their own worker, so slow receivers hold up nothing else
    assert (
        "webhooks" in services["webhooks"]["command"] and "celery" in services["worker"]["command"]
    )
    web = " ".join(_command_words(services["web"]["command"]))
    assert "migrate" in web, "migrations must run when the web starts"
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])


def test_compose_environment_is_read_by_the_settings():
    services = _compose()["services"]
    for name in ("web", "streams", "worker", "webhooks", "beat"):
        env = services[name]["environment"]
        unknown = set(env) - READ_VARIABLES
        assert not unknown, f"{name} sets variables the code never reads: {unknown}"
        assert {"DATABASE_URL", "REDIS_URL"} <= set(env)
        assert env["DATABASE_URL"].split("@")[1].startswith("postgres:5432/")
        assert env["REDIS_URL"].startswith("redis://redis:6379")


def test_worker_and_beat_start_after_migrations():
    services = _compose()["services"]
    for name in ("worker", "webhooks", "beat"):
        assert services[name]["depends_on"]["web"]["condition"] == "service_healthy"


def test_dockerfile_installs_the_locked_dependencies_and_serves_wsgi():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements.lock" in dockerfile
    cmd = re.search(r"^CMD (.+)$", dockerfile, flags=re.M)
    assert cmd is not None
    _check_command(yaml.safe_load(cmd.group(1)))


def test_procfile_starts_web_worker_and_beat():
    entries = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    assert set(entries) == {"web", "streams", "worker", "webhooks", "beat"}
    for command in entries.values():
        _check_command(re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", command).split())


def test_the_https_front_routes_streams_to_the_asgi_process_and_the_rest_to_web():
    services = _compose()["services"]
    caddy = services["caddy"]
    mounted = {v.split(":")[0] for v in caddy["volumes"]}
    assert "./scripts/Caddyfile" in mounted and (ROOT / "scripts" / "Caddyfile").exists()
    assert caddy["environment"]["GATEWAY_WEB"] == "web:8000"
    streams_port = _command_words(services["streams"]["command"])
    assert (
        caddy["environment"]["GATEWAY_STREAMS"]
        == f"streams:{streams_port[streams_port.index('--port') + 1]}"
    )
    caddyfile = (ROOT / "scripts" / "Caddyfile").read_text()
    assert "{$GATEWAY_STREAMS" in caddyfile and "{$GATEWAY_WEB" in caddyfile
    assert "flush_interval -1" in caddyfile
    # Phones get URLs on the front's address, and the server trusts the front's headers.
    env = services["web"]["environment"]
    assert env["PUBLIC_URL"].startswith("${PUBLIC_URL:-https://")
    assert env["BEHIND_PROXY"] == "${BEHIND_PROXY:-1}"


def test_compose_keeps_each_containers_metrics_samples_apart_and_fresh():
    services = _compose()["services"]
    folder = services["web"]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    # Process ids repeat across containers: never a folder on the shared volume.
    assert not folder.startswith("/app/var")
    for name in ("web", "streams", "worker", "webhooks"):
        script = " ".join(_command_words(services[name]["command"]))
        assert f"rm -rf {folder}" in script and f"mkdir -p {folder}" in script, name
    for name in ("worker", "webhooks"):
        assert services[name]["environment"]["METRICS_WORKER_PORT"] == 9808
        assert "ports" not in services[name]  # unauthenticated: never on the host


def test_compose_scales_web_and_workers_without_clashes():
    """`docker compose up --scale web=3 --scale worker=2 ...`: no fixed host port or container
    name on a service that scales (only the HTTPS front publishes ports), and beat stays one
    service of its own, so scaling the workers never adds a second beat."""
    services = _compose()["services"]
    for name in ("web", "streams", "worker", "webhooks"):
        assert "ports" not in services[name], name
        assert "container_name" not in services[name], name
        assert "beat" not in " ".join(_command_words(services[name]["command"])), name
        assert "-B" not in _command_words(services[name]["command"]), name
    assert "deploy" not in services["beat"] or services["beat"]["deploy"].get("replicas", 1) == 1
