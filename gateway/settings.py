"""The only settings file. Every deploy-specific value comes from the environment.

With no variable set at all, the gateway runs embedded: an SQLite file and a filesystem
Celery broker under ``var/``. Parsers are strict: a malformed value stops start-up with a
message naming the variable, instead of being silently read as a default.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 1/0/true/false/yes/no/on/off, got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum:  # also refuses nan
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {raw.strip()}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: set[str]) -> str:
    value = env_str(name, default).upper()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


DEBUG = env_bool("DEBUG", False)

# Runtime state of the embedded default (SQLite file, broker folders, generated secret key).
VAR_DIR = Path(env_str("GATEWAY_VAR_DIR") or BASE_DIR / "var").resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept under var/.

    A constant in the repository would be shared by every installation; a key generated at
    every start would log everybody out and change every compatibility token on restart.
    """
    configured = env_str("SECRET_KEY")
    if configured:
        if len(configured) < 32:
            raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters long")
        return configured
    path = VAR_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    key = secrets.token_urlsafe(50)
    # O_EXCL: when web, worker and beat start together only the first writer wins.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


SECRET_KEY = _secret_key()

ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if not DEBUG else ["*"]
)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Behind a TLS-terminating proxy (the docker-compose deployment may sit behind one).
BEHIND_PROXY = env_bool("BEHIND_PROXY", False)
if BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True
    # The proxy speaks HTTPS to browsers: the admin's cookies never travel in clear text.
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

INSTALLED_APPS = [
    # First, so its admin templates (the index with the dashboard link) take precedence.
    "gateway",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "devices",
    "messaging",
    "contacts",
]

MIDDLEWARE = [
    "gateway.metrics.RequestMetricsMiddleware",
    # A view that raised because the database is unreachable answers 503, not 500.
    "gateway.outage.DatabaseOutageMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "gateway.urls"
WSGI_APPLICATION = "gateway.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------

DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    try:
        _db: dict[str, Any] = dict(
            dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    if _db["ENGINE"] == "django.db.backends.postgresql":
        _db["CONN_HEALTH_CHECKS"] = True
        _db.setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
        # Behind a pooler in transaction mode (PgBouncer): a server-side cursor (a queryset's
        # .iterator()) would outlive the transaction its server connection belongs to.
        _db["DISABLE_SERVER_SIDE_CURSORS"] = env_bool("DB_TRANSACTION_POOLER", False)
else:
    _db = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(VAR_DIR / "gateway.sqlite3")}

if _db["ENGINE"] == "django.db.backends.sqlite3":
    import sqlite3

    # The message moves read what they wrote with UPDATE ... RETURNING (SQLite 3.35, 2021).
    if sqlite3.sqlite_version_info < (3, 35):
        raise ImproperlyConfigured(
            f"the embedded database needs SQLite 3.35 or newer; Python here links "
            f"{sqlite3.sqlite_version}. Use a newer system or set DATABASE_URL (PostgreSQL)."
        )
    # Web workers, the Celery worker and beat share one file: WAL lets readers run beside
    # the writer, IMMEDIATE takes the write lock at BEGIN (so two transactions never
    # deadlock upgrading a read lock), and the timeout makes writers queue instead of failing.
    _db.setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": (
                "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;PRAGMA foreign_keys=ON;"
            ),
        }
    )
    _db.setdefault("TEST", {})["NAME"] = str(VAR_DIR / "test.sqlite3")

DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Accounts -------------------------------------------------------------------------------

AUTH_USER_MODEL = "gateway.User"
LOGIN_URL = "admin:login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Argon2id, 50-100 ms a login (gateway/hashers.py). The PBKDF2 hashers after it verify the
# hashes made before it was the default; a successful login re-hashes them with Argon2id.
PASSWORD_HASHERS = [
    "gateway.hashers.GatewayArgon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
]

# --- Time -----------------------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
# The admin's dates and times: to the second, with the zone (gateway/formats/en/formats.py).
FORMAT_MODULE_PATH = ["gateway.formats"]
USE_I18N = True
USE_TZ = True
TIME_ZONE = "UTC"  # stored times are UTC; accounts render in their own zone
DEFAULT_ACCOUNT_TIME_ZONE = env_str("DEFAULT_ACCOUNT_TIME_ZONE", "UTC")
try:
    ZoneInfo(DEFAULT_ACCOUNT_TIME_ZONE)
except (ZoneInfoNotFoundError, ValueError):
    raise ImproperlyConfigured(
        f"DEFAULT_ACCOUNT_TIME_ZONE is not an IANA zone: {DEFAULT_ACCOUNT_TIME_ZONE!r}"
    ) from None

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Redis, cache and Celery ----------------------------------------------------------------

REDIS_URL = env_str("REDIS_URL")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL
# The longest any one Redis call (connect, a command, a publish) may wait. Redis only signals
# and counts, so a hung Redis costs a request at most about this long and never an SMS; after
# a failure each process leaves that server alone for 5 s (gateway/redis_guard.py). A waiting
# long poll is not bound by it: its wait on the doorbell has its own timeout.
REDIS_TIMEOUT_SECONDS = env_float("REDIS_TIMEOUT_SECONDS", 1.0, minimum=0.05)

CACHES: dict[str, dict[str, Any]]
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "gateway",
            "OPTIONS": {
                "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
                "socket_timeout": REDIS_TIMEOUT_SECONDS,
                "pool_class": "gateway.redis_guard.GuardedConnectionPool",
            },
        }
    }
else:
    # Shared between web workers, the Celery worker and beat, which a per-process
    # local-memory cache would not be.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
            # This backend's incr() rewrites an entry with the default timeout; it must
            # outlive the longest counting window (login limits: 30 minutes).
            "TIMEOUT": 3600,
        }
    }

if CELERY_BROKER_URL:
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {
        # Above the longest task's hard time limit, so a late-acked task is not redelivered
        # to a second worker while the first is still running it.
        "visibility_timeout": 3600,
        "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
        # Without it a publish to a hung Redis waits for ever. The worker's BRPOP and pub/sub
        # reads are driven by its event loop (a read starts once data is there), so they are
        # not cut short by it.
        "socket_timeout": REDIS_TIMEOUT_SECONDS,
        # A channel on a broken connection reconnects once, not for ever.
        "max_retries": 1,
    }
    CELERY_RESULT_BACKEND: str | None = env_str("CELERY_RESULT_BACKEND") or None
else:
    # No server needed: kombu's filesystem transport exchanges messages through a folder
    # that web, worker and beat all see.
    from gateway.embedded_broker import transport_options

    # The host is a placeholder (the transport uses the folders below); naming one keeps
    # kombu from warning "No hostname was supplied" in every process at start.
    CELERY_BROKER_URL = "filesystem://localhost/"
    CELERY_BROKER_TRANSPORT_OPTIONS = transport_options(VAR_DIR / "broker")
    CELERY_RESULT_BACKEND = None

# A task sent after a commit must not hold the request when the broker hangs: the work is
# in the database already and a beat sweep finds it. So: one connection attempt within
# REDIS_TIMEOUT_SECONDS, and one quick publish retry (the request path sends with no retry
# at all, see gateway.tasks.enqueue_on_commit).
CELERY_BROKER_CONNECTION_TIMEOUT = REDIS_TIMEOUT_SECONDS
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
# A Redis result backend (CELERY_RESULT_BACKEND), if one is configured, waits no longer.
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = REDIS_TIMEOUT_SECONDS
CELERY_REDIS_SOCKET_TIMEOUT = REDIS_TIMEOUT_SECONDS
# Results are not read anywhere: tasks write their outcome to the database.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
# Tasks are idempotent, so a task interrupted by a crash is safely run again.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Webhook deliveries wait on other people's servers: their own queue and worker, so a slow
# receiver never holds up newsletters or sweeps.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = {"messaging.tasks.deliver_webhook": {"queue": "webhooks"}}
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 240, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300, minimum=2)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup would close every database connection before and after each task:
# a new PostgreSQL session for every webhook delivery. Workers keep them as web threads do
# (DB_CONN_MAX_AGE, health checks), by gateway.celery's per-task hygiene instead.
CELERY_DB_REUSE_MAX = 2**31
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Beat's sweeps. SWEEP_SECONDS, when set, runs every sweep that often (tests, tiny installs).
SWEEP_SECONDS = env_int("SWEEP_SECONDS", 0, minimum=0)


def _every(seconds: int) -> dict[str, Any]:
    interval = float(SWEEP_SECONDS or seconds)
    # A run still waiting when two more are due is dropped, so runs never pile up behind a
    # stopped worker (the sweeps are idempotent: an extra run does no harm either).
    return {"schedule": interval, "options": {"expires": max(2 * interval, 10.0)}}


CELERY_BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "worker-heartbeat": {
        "task": "gateway.tasks.record_heartbeat",
        **_every(env_int("WORKER_HEARTBEAT_SECONDS", 30, minimum=1)),
    },
    "newsletters": {"task": "contacts.tasks.start_due_newsletters", **_every(10)},
    "webhook-sweep": {"task": "messaging.tasks.sweep_webhooks", **_every(30)},
    "device-online-sweep": {"task": "devices.tasks.announce_device_states", **_every(30)},
    "device-lease-sweep": {"task": "devices.tasks.sweep_leases", **_every(15)},
    "pool-routing-sweep": {"task": "devices.tasks.route_pools", **_every(10)},
    "housekeeping": {"task": "messaging.tasks.housekeeping", **_every(60)},
    "problem-sweep": {
        "task": "messaging.tasks.sweep_problems",
        **_every(env_int("PROBLEM_SWEEP_SECONDS", 60, minimum=1)),
    },
}

# --- Logging --------------------------------------------------------------------------------

LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
# Every line goes through gateway.redaction.RedactSecrets (tokens in query strings,
# passwords, Authorization values). Django's own loggers lose their default handlers (which
# would bypass it: the console in DEBUG, runserver's request lines) and propagate here.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "gateway.redaction.RedactSecrets"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": [], "propagate": True},
        "django.server": {"handlers": [], "propagate": True},
        "django.db.backends": {"level": "INFO"},
    },
}

# --- API ------------------------------------------------------------------------------------

API_RATE_LIMIT = env_str("API_RATE_LIMIT", "6000/min")
if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", API_RATE_LIMIT):
    raise ImproperlyConfigured(
        f"API_RATE_LIMIT must look like 6000/min (per s, min, hour or day), got {API_RATE_LIMIT!r}"
    )

REST_FRAMEWORK = {
    # The REST API (/api/v1/). The device API sets its own classes.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "messaging.api.v1.base.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["messaging.api.v1.base.HasAccount"],
    # JSON bounded in size and depth for both DRF APIs (gateway.api_fields).
    "DEFAULT_PARSER_CLASSES": [
        "gateway.api_fields.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["messaging.api.v1.base.TokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api": API_RATE_LIMIT},
    "EXCEPTION_HANDLER": "messaging.api.v1.base.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "SMS gateway API",
    "DESCRIPTION": (
        "Send SMS through your own phones. Authenticate with `Authorization: Bearer <token>`. "
        "Errors are RFC 9457 problem documents."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "messaging.api.v1.base.add_problem_responses",
    ],
}

# Bulk SMS requests (addalotofsms) carry up to 10,000 items; each API bounds its own bodies
# below this ceiling.
DATA_UPLOAD_MAX_MEMORY_SIZE = 11 * 1024 * 1024
DEVICE_CURRENT_APP_VERSION = env_str("DEVICE_CURRENT_APP_VERSION")
# An incoming SMS whose first word is one of these opts its sender out of (or back into)
# newsletters.
OPT_OUT_KEYWORDS = [
    k.upper()
    for k in env_list(
        "OPT_OUT_KEYWORDS", ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"]
    )
]
OPT_IN_KEYWORDS = [k.upper() for k in env_list("OPT_IN_KEYWORDS", ["START", "UNSTOP", "SUBSCRIBE"])]

# Waiting SMS no phone took within this many hours of their send time end "expired" (21);
# 0 keeps them waiting for ever.
MESSAGE_EXPIRY_HOURS = env_int("MESSAGE_EXPIRY_HOURS", 7 * 24, minimum=0)
# Status history and finished webhook events older than this many days are deleted
# (messages themselves are kept); 0 keeps everything.
HISTORY_RETENTION_DAYS = env_int("HISTORY_RETENTION_DAYS", 90, minimum=0)
# First webhook retry after this many seconds, doubling up to an hour.
WEBHOOK_FIRST_RETRY_SECONDS = env_int("WEBHOOK_FIRST_RETRY_SECONDS", 30, minimum=1)

# Webhooks to loopback/private/link-local addresses are refused unless allowed here.
WEBHOOK_ALLOW_PRIVATE_TARGETS = env_bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", False)
# Hours an undeliverable webhook event is retried (with backoff up to an hour) before failing.
WEBHOOK_RETRY_HOURS = env_int("WEBHOOK_RETRY_HOURS", 25, minimum=1)
# Seconds one webhook attempt may take in all: name lookup, connect, TLS, request, answer.
# Also what the REST test delivery holds a web thread at most. Below the delivery task's
# 30 s time limit.
WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 5, minimum=1)
if WEBHOOK_TIMEOUT_SECONDS > 25:
    raise ImproperlyConfigured(
        f"WEBHOOK_TIMEOUT_SECONDS must be at most 25, got {WEBHOOK_TIMEOUT_SECONDS}"
    )
# Seconds an event being delivered, or queued by a sweep, is not due again (so it is never
# sent twice at once); a delivery cut off with its worker is retried once they have passed.
WEBHOOK_CLAIM_SECONDS = env_int("WEBHOOK_CLAIM_SECONDS", 60, minimum=WEBHOOK_TIMEOUT_SECONDS + 5)

# Seconds a phone has to confirm messages it polled before they return to the queue, and
# to report an outcome after a confirmed message's send time before it ends "unknown".
DEVICE_LEASE_SECONDS = env_int("DEVICE_LEASE_SECONDS", 60, minimum=1)
DEVICE_OUTCOME_SECONDS = env_int("DEVICE_OUTCOME_SECONDS", 15 * 60, minimum=1)
# Pools: seconds after its paced send time an SMSGate app phone may still send a pooled
# message it fetched (its validUntil). Past that plus a 10-minute margin, a pooled message
# that phone never reported ends unknown (22): it may have sent it (docs/pools.md).
POOL_VALID_SECONDS = env_int("POOL_VALID_SECONDS", 10 * 60, minimum=60)
# Pools: seconds after its paced send time a confirmed pooled message may go without an
# outcome before the phone is asked to give it back (when another phone of the pool may
# send it); a phone that answers "not sent" hands it back to the pool (docs/pools.md).
POOL_REVOKE_SECONDS = env_int("POOL_REVOKE_SECONDS", 120, minimum=10)
if POOL_REVOKE_SECONDS >= DEVICE_OUTCOME_SECONDS:
    raise ImproperlyConfigured(
        f"POOL_REVOKE_SECONDS ({POOL_REVOKE_SECONDS}) must be below DEVICE_OUTCOME_SECONDS "
        f"({DEVICE_OUTCOME_SECONDS}): a message is asked back before its outcome is overdue"
    )
# Fleet problems (messaging.problems, swept by beat every PROBLEM_SWEEP_SECONDS): a phone
# silent this long while SMS wait for it; SMS a phone confirmed that are still without an
# outcome this long after their send time (they end unknown at DEVICE_OUTCOME_SECONDS); a
# sending newsletter none of whose SMS moved for this long.
PROBLEM_SILENT_SECONDS = env_int("PROBLEM_SILENT_SECONDS", 10 * 60, minimum=60)
PROBLEM_OUTCOME_SECONDS = env_int("PROBLEM_OUTCOME_SECONDS", 5 * 60, minimum=60)
if PROBLEM_OUTCOME_SECONDS >= DEVICE_OUTCOME_SECONDS:
    raise ImproperlyConfigured(
        f"PROBLEM_OUTCOME_SECONDS ({PROBLEM_OUTCOME_SECONDS}) must be below "
        f"DEVICE_OUTCOME_SECONDS ({DEVICE_OUTCOME_SECONDS}): past that the SMS end unknown"
    )
PROBLEM_STALL_SECONDS = env_int("PROBLEM_STALL_SECONDS", 30 * 60, minimum=60)
# SMSGate's integration API: how long its JWT access tokens live at most (a request may ask
# for less), and its refresh tokens (docs/smsgate-api.md).
SMSGATE_JWT_ACCESS_SECONDS = env_int("SMSGATE_JWT_ACCESS_SECONDS", 15 * 60, minimum=60)
SMSGATE_JWT_REFRESH_SECONDS = env_int("SMSGATE_JWT_REFRESH_SECONDS", 720 * 3600, minimum=300)
# Long polls waiting at once per web process (each holds a thread); see docs/operations.md.
# By default all but 4 of the process's threads (WEB_THREADS, as given to gunicorn).
WEB_THREADS = env_int("WEB_THREADS", 16, minimum=1)
LONG_POLL_MAX_WAITERS = env_int("LONG_POLL_MAX_WAITERS", max(WEB_THREADS - 4, 0), minimum=0)

# The server's own address as phones and browsers reach it (https://sms.example.com),
# used in the URLs it hands out: the SMSGate app's server URL and webhook receivers, the
# pairing page. Empty: taken from each request (right behind a proxy only with
# BEHIND_PROXY=1).
PUBLIC_URL = env_str("PUBLIC_URL", "").rstrip("/")
if PUBLIC_URL and not PUBLIC_URL.startswith(("https://", "http://")):
    raise ImproperlyConfigured(f"PUBLIC_URL must start with https:// or http://: {PUBLIC_URL!r}")
# SMSGate app: seconds between its health pings (system:ping webhook + a message pull),
# the fallback when its event stream is down; and how far a webhook's X-Timestamp may be
# from our clock before the call is refused as stale.
SMSGATE_PING_SECONDS = env_int("SMSGATE_PING_SECONDS", 60, minimum=10)
SMSGATE_WEBHOOK_SKEW_SECONDS = env_int("SMSGATE_WEBHOOK_SKEW_SECONDS", 300, minimum=30)
# Event streams (SSE): a keep-alive comment at least this often.
STREAM_KEEPALIVE_SECONDS = env_int("STREAM_KEEPALIVE_SECONDS", 15, minimum=1)

# Prometheus metrics at /metrics (docs/operations.md): with METRICS_TOKEN set, a scraper
# sends "Authorization: Bearer <token>"; without it, only these client addresses (networks,
# comma-separated) are served. METRICS_WORKER_PORT: a Celery worker serves its own samples
# on this port and address (a worker in its own container; 0: off). Unauthenticated: bind
# it only where just the scraper reaches it.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
try:
    METRICS_ALLOW_FROM = [
        ipaddress.ip_network(net, strict=False)
        for net in env_list("METRICS_ALLOW_FROM", ["127.0.0.0/8", "::1/128"])
    ]
except ValueError as exc:
    raise ImproperlyConfigured(f"METRICS_ALLOW_FROM must list IP networks: {exc}") from None
METRICS_WORKER_PORT = env_int("METRICS_WORKER_PORT", 0, minimum=0)
METRICS_WORKER_BIND = env_str("METRICS_WORKER_BIND", "127.0.0.1")
# Where every process of this host writes its metrics samples (prometheus_client reads it
# itself, at import: set it before the processes start, as scripts/run.sh does).
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", "")
if PROMETHEUS_MULTIPROC_DIR:
    try:
        os.makedirs(PROMETHEUS_MULTIPROC_DIR, exist_ok=True)
    except OSError as exc:
        raise ImproperlyConfigured(
            f"PROMETHEUS_MULTIPROC_DIR must be a folder this process can write: {exc}"
        ) from None

# Tokens are checked at most this often for their last-used time, so a busy client does not
# turn every request into a write.
TOKEN_LAST_USED_RESOLUTION_SECONDS = env_int("TOKEN_LAST_USED_RESOLUTION_SECONDS", 60, minimum=0)

if not DEBUG:
    SESSION_COOKIE_HTTPONLY = True
    CSRF_COOKIE_HTTPONLY = False
    X_FRAME_OPTIONS = "DENY"
    SECURE_CONTENT_TYPE_NOSNIFF = True
