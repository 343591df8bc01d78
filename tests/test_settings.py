"""Settings are parsed strictly, and the embedded default needs no configuration."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRINT = (
    "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'gateway.settings'; "
    "from django.conf import settings; "
    "print(settings.DATABASES['default']['ENGINE'], settings.CELERY_BROKER_URL, "
    "settings.SECRET_KEY)"
)


def _settings(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "SECRET_KEY", "DEBUG"}
    }
    clean.update({"GATEWAY_VAR_DIR": str(tmp_path / "var"), **env})
    return subprocess.run(
        [sys.executable, "-c", PRINT], cwd=ROOT, env=clean, capture_output=True, text=True
    )


def test_no_configuration_means_sqlite_and_a_serverless_broker(tmp_path):
    result = _settings(tmp_path)
    assert result.returncode == 0, result.stderr
    engine, broker, _ = result.stdout.split()
    assert engine == "django.db.backends.sqlite3"
    assert broker.startswith("filesystem://")
    assert (tmp_path / "var" / "broker" / "queue").is_dir()


def test_a_generated_secret_key_is_kept_and_reused(tmp_path):
    first = _settings(tmp_path).stdout.split()[2]
    second = _settings(tmp_path).stdout.split()[2]
    assert first == second and len(first) >= 50
    assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o077 == 0
    assert _settings(tmp_path / "elsewhere").stdout.split()[2] != first


def test_urls_configure_postgres_and_redis(tmp_path):
    result = _settings(
        tmp_path,
        DATABASE_URL="postgres://gw:pw@db.internal:5432/gateway",
        REDIS_URL="redis://cache.internal:6379/0",
    )
    assert result.returncode == 0, result.stderr
    engine, broker, _ = result.stdout.split()
    assert engine == "django.db.backends.postgresql"
    assert broker == "redis://cache.internal:6379/0"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "maybe"}, "DEBUG must be one of"),
        (
            {"DB_CONN_MAX_AGE": "ten", "DATABASE_URL": "postgres://h/db"},
            "DB_CONN_MAX_AGE must be an integer",
        ),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY must be at least 32"),
        ({"DATABASE_URL": "nosuchdb://x"}, "DATABASE_URL is not a valid database URL"),
        ({"DEFAULT_ACCOUNT_TIME_ZONE": "Mars/Olympus"}, "not an IANA zone"),
        ({"WORKER_HEARTBEAT_SECONDS": "0"}, "must be at least 1"),
        ({"API_RATE_LIMIT": "lots"}, "API_RATE_LIMIT must look like"),
        ({"REDIS_TIMEOUT_SECONDS": "soon"}, "REDIS_TIMEOUT_SECONDS must be a number"),
        ({"REDIS_TIMEOUT_SECONDS": "0"}, "REDIS_TIMEOUT_SECONDS must be at least 0.05"),
        ({"REDIS_TIMEOUT_SECONDS": "nan"}, "REDIS_TIMEOUT_SECONDS must be at least 0.05"),
        ({"WEBHOOK_TIMEOUT_SECONDS": "60"}, "WEBHOOK_TIMEOUT_SECONDS must be at most 25"),
        ({"POOL_REVOKE_SECONDS": "900"}, "POOL_REVOKE_SECONDS (900) must be below"),
    ],
)
def test_a_malformed_variable_stops_start_up_naming_it(tmp_path, env, message):
    result = _settings(tmp_path, **env)
    assert result.returncode != 0
    assert message in result.stderr


def test_env_example_lists_every_variable_settings_read():
    import re

    source = (ROOT / "gateway" / "settings.py").read_text()
    read = set(re.findall(r'env_(?:str|bool|int|float|list|choice)\(\s*"([A-Z_]+)"', source))
    procfile = set(re.findall(r"\$\{([A-Z_]+):-", (ROOT / "Procfile").read_text()))
    # The HTTPS front's own (scripts/Caddyfile), for running caddy beside scripts/run.sh.
    procfile |= set(re.findall(r"\{\$([A-Z_]+)", (ROOT / "scripts" / "Caddyfile").read_text()))
    # docker-compose.yml's own (ports, the database password, the monitoring profile), and
    # what scripts/run.sh's supervisor reads.
    compose = (ROOT / "docker-compose.yml").read_text()
    procfile |= set(re.findall(r"\$\{([A-Z_]+)(?::-|:\?|\})", compose))
    supervisor = (ROOT / "gateway" / "supervisor.py").read_text()
    procfile |= set(re.findall(r'environ\.get\("(GATEWAY_[A-Z_]+)"', supervisor))
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z_]+)=", example, flags=re.M))
    known = read | procfile
    assert known <= listed, f"missing from .env.example: {sorted(known - listed)}"
    assert listed <= known, f".env.example names unknown variables: {sorted(listed - known)}"


def test_behind_a_proxy_the_session_and_csrf_cookies_are_secure(tmp_path):
    code = (
        "import os; os.environ['DJANGO_SETTINGS_MODULE'] = 'gateway.settings'; "
        "import django; django.setup(); "
        "from django.test import Client; "
        "from django.conf import settings; settings.ALLOWED_HOSTS = ['testserver']; "
        "response = Client().get('/admin/login/', secure=True); "
        "print(response.cookies['csrftoken'].output())"
    )
    for proxy, secure in (("1", True), ("0", False)):
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
        env.update({"GATEWAY_VAR_DIR": str(tmp_path / "var"), "BEHIND_PROXY": proxy})
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert ("; Secure" in result.stdout) is secure, result.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DEBUG", "maybe"), ("API_RATE_LIMIT", "lots"), ("DEVICE_LEASE_SECONDS", "soon")],
)
def test_a_malformed_setting_is_one_line_naming_it(tmp_path, variable, value):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update({"GATEWAY_VAR_DIR": str(tmp_path / "var"), variable: value})
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Configuration error: {variable} ") and repr(value) in line


def test_behind_a_transaction_pooler_no_server_side_cursors(tmp_path):
    show = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'gateway.settings'; "
        "from django.conf import settings; "
        "print(settings.DATABASES['default']['DISABLE_SERVER_SIDE_CURSORS'])"
    )
    url = "postgres://gw:pw@pgbouncer.internal:6432/gateway"
    for value, expected in (("1", "True"), ("", "False")):
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SECRET_KEY"}}
        env.update(GATEWAY_VAR_DIR=str(tmp_path / "var"), DATABASE_URL=url)
        env["DB_TRANSACTION_POOLER"] = value
        result = subprocess.run(
            [sys.executable, "-c", show], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected
