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


def test_compose_has_the_production_services_with_health_checks():
    services = _compose()["services"]
    assert set(services) == {
        "postgres", "redis", "web", "streams", "caddy", "worker", "webhooks", "beat"
    }  # fmt: skip
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
    assert any("pgdata" in v for v in services["postgres"]["volumes"])


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
