"""SensorSync settings. Everything that differs between machines comes from the environment (or `.env`)."""

from pathlib import Path
from typing import Any

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)

# Without DEBUG there is no default key. An empty one lets tooling run (makemigrations, migrate, shell); Django
# refuses to sign anything with it, `check --deploy` reports it, and the server refuses to start (wsgi.py).
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY and DEBUG:
    # Only ever used by the local quick start (DJANGO_DEBUG=true).
    SECRET_KEY = "django-insecure-local-quick-start-only"

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "events",
    "devices",
    "sensors",
    "reconciliation",
    "fleetconfig",  # sensor templates, assignments, overrides: rendering each device's desired sensors
    "ingest",  # MQTT ingestion
    "devicelogs",  # the logs the agents upload
    "rollouts",  # staged rollouts of fleet configuration changes
    "webhooks",  # outbound webhooks (the top layer)
    "sensorsync_project.apps.SensorSyncProjectConfig",
]

MIDDLEWARE = [
    "sensorsync_project.proxy.ForwardedForMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "events.middleware.RequestContextMiddleware",
    "sensorsync_project.outage.DatabaseOutageMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "sensorsync_project.ratelimit.AdminLoginThrottleMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# The agents' routes (/api/v1/device/...) run through these only (sensorsync_project.handlers): their views read
# no session, user or messages and send no HTML. In MIDDLEWARE's order (check sensorsync.E010).
SENSORSYNC_AGENT_MIDDLEWARE = [
    "sensorsync_project.proxy.ForwardedForMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "events.middleware.RequestContextMiddleware",
    "sensorsync_project.outage.DatabaseOutageMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "sensorsync_project.urls"
WSGI_APPLICATION = "sensorsync_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# SQLite is the zero-setup default; DATABASE_URL (postgres://...) is what production and CI use.
if "DATABASE_URL" not in env:
    (BASE_DIR / "var").mkdir(exist_ok=True)
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DJANGO_CONN_MAX_AGE", default=600)
# A persistent connection is checked (one SELECT 1) before the first query of each request, so a worker reconnects
# quietly after the database restarted. That round trip is a large share of a 304 poll (docs/scaling.md):
# DJANGO_CONN_HEALTH_CHECKS=false saves it, and the first request on each dead connection answers 503 instead.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DJANGO_CONN_HEALTH_CHECKS", default=True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A slow or stuck database must not hold a worker forever; lock waits count towards it too.
    STATEMENT_TIMEOUT_MS = env.int("DJANGO_DB_STATEMENT_TIMEOUT_MS", default=10_000)
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
    # Prepared statements: psycopg prepares a statement once it has run it 5 times on a connection, so the agent's
    # statements are planned once per connection instead of on every request (measured with pgbench: the report
    # lookup ran ~5x faster prepared). They need server-side parameter binding. Behind PgBouncer in transaction
    # mode this needs PgBouncer >= 1.21 with max_prepared_statements set; DJANGO_DB_PREPARED_STATEMENTS=false
    # turns both off (Django's defaults).
    if env.bool("DJANGO_DB_PREPARED_STATEMENTS", default=True):
        DATABASES["default"]["OPTIONS"].update({"server_side_binding": True, "prepare_threshold": 5})
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Django's backend with SQLite's real bound-parameter limit (see sensorsync_project/sqlite3/base.py).
    DATABASES["default"]["ENGINE"] = "sensorsync_project.sqlite3"
    # IMMEDIATE takes the write lock at BEGIN, so two writers queue instead of failing with
    # "database is locked" when a read transaction tries to upgrade to a write.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"transaction_mode": "IMMEDIATE", "timeout": 20})

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The project's own static files (the admin's JSON editor and badges, the fleet page): vendored, no CDN.
STATICFILES_DIRS = [BASE_DIR / "static"]

LOGIN_URL = "admin:login"
# Messages live in the session, not a cookie: the admin shows a new device key once through a message.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate challenge makes anonymous requests a 401 (session auth alone gives 403).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["sensorsync_project.api.permissions.StaffModelPermissions"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "sensorsync_project.api.pagination.StandardPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "sensorsync_project.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "sensorsync_project.api.renderers.FastJSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["sensorsync_project.api.parsers.StrictJSONParser"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "SensorSync API",
    "DESCRIPTION": "Desired-state / reported-state reconciliation for the sensors of an edge-device fleet.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # One name for a choice set that several fields use (a webhook attempt's result, an endpoint's latest).
    "ENUM_NAME_OVERRIDES": {
        "WebhookAttemptResultEnum": "webhooks.choices.WebhookAttemptResultChoices",
        "WebhookDeliveryStatusEnum": "webhooks.choices.WebhookDeliveryStatusChoices",
        "RenderJobStatusEnum": "fleetconfig.choices.RenderJobStatusChoices",
        "RolloutStatusEnum": "rollouts.choices.RolloutStatusChoices",
        "RolloutKindEnum": "rollouts.choices.RolloutKindChoices",
        "RolloutPauseReasonEnum": "rollouts.choices.RolloutPauseReasonChoices",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "sensorsync_project.api.schema.add_agent_endpoints",
        "sensorsync_project.api.schema.add_error_responses",
    ],
}

# Agent protocol limits; and the largest management API body (a target state of a few thousand sensors).
SENSORSYNC_MAX_REPORT_BYTES = env.int("SENSORSYNC_MAX_REPORT_BYTES", default=1024 * 1024)
# The devices' logs (README, "Device logs"): kept per device, newest first, up to SENSORSYNC_DEVICE_LOG_KEEP lines
# and SENSORSYNC_DEVICE_LOG_RETENTION_DAYS days (manage.py prune_device_logs, daily). Off: uploads are answered
# and dropped. An upload (decompressed) is at most SENSORSYNC_DEVICE_LOG_MAX_BYTES; a longer message is cut.
SENSORSYNC_DEVICE_LOGS = env.bool("SENSORSYNC_DEVICE_LOGS", default=True)
SENSORSYNC_DEVICE_LOG_KEEP = env.int("SENSORSYNC_DEVICE_LOG_KEEP", default=2000)
SENSORSYNC_DEVICE_LOG_RETENTION_DAYS = env.int("SENSORSYNC_DEVICE_LOG_RETENTION_DAYS", default=14)
SENSORSYNC_DEVICE_LOG_MAX_BYTES = env.int("SENSORSYNC_DEVICE_LOG_MAX_BYTES", default=1024 * 1024)
SENSORSYNC_DEVICE_LOG_MESSAGE_MAX = env.int("SENSORSYNC_DEVICE_LOG_MESSAGE_MAX", default=8000)
SENSORSYNC_MAX_BODY_BYTES = env.int("SENSORSYNC_MAX_BODY_BYTES", default=1024 * 1024)
# The most sensors one device may have (desired, or reported by its agent): it bounds the work one request causes
# (rows reconciled, and events appended: about two per sensor at most). Beyond it: a 400 naming config.sensors.
SENSORSYNC_MAX_SENSORS_PER_DEVICE = env.int("SENSORSYNC_MAX_SENSORS_PER_DEVICE", default=2000)
# A report's reported_at may be this far ahead of the server's clock; further is refused (it would make every later
# report stale). The real agent sends no reported_at.
SENSORSYNC_MAX_CLOCK_SKEW_SECONDS = env.int("SENSORSYNC_MAX_CLOCK_SKEW_SECONDS", default=300)
# A device not seen (no poll, no report) for this long is shown as offline in the admin and on the fleet page.
SENSORSYNC_OFFLINE_AFTER_SECONDS = env.int("SENSORSYNC_OFFLINE_AFTER_SECONDS", default=300)
# Liveness (last_seen_at) is written at most this often per device: agents poll and report every 60 s, and
# rewriting the device row on every request would double the cost of the no-op paths.
SENSORSYNC_LIVENESS_WRITE_SECONDS = env.int("SENSORSYNC_LIVENESS_WRITE_SECONDS", default=60)
# Events older than this are dropped by `manage.py prune_events` (run it daily), after what they established is kept
# in per-device snapshots. A device flapping many sensors writes ~1,000 events per report: the log must not grow for
# ever. On PostgreSQL whole months go, so an event is kept this long and at most a month more. 0 keeps every event.
SENSORSYNC_EVENT_RETENTION_DAYS = env.int("SENSORSYNC_EVENT_RETENTION_DAYS", default=90)
# Rate limits, "COUNT/SECONDS" ("off" disables). An agent polls and reports every 60 s (2 a minute); the budget
# leaves room for flushing its queue of offline reports without letting one device flood the server.
SENSORSYNC_AGENT_RATE_LIMIT = env.str("SENSORSYNC_AGENT_RATE_LIMIT", default="600/60")
# The agent's log uploads have their own budget: it flushes its log 100 ms after a line, so a busy device uploads
# often, and that must never cost it a poll or a report.
SENSORSYNC_DEVICE_LOG_RATE_LIMIT = env.str("SENSORSYNC_DEVICE_LOG_RATE_LIMIT", default="300/60")
SENSORSYNC_ADMIN_LOGIN_RATE_LIMIT = env.str("SENSORSYNC_ADMIN_LOGIN_RATE_LIMIT", default="5/300")
# Device registrations per client address: a device registers once, then retries only on failure (with backoff);
# a plant behind one NAT address may register a few dozen at once.
SENSORSYNC_REGISTER_RATE_LIMIT = env.str("SENSORSYNC_REGISTER_RATE_LIMIT", default="60/60")
# The MQTT broker URL handed to devices at registration (mqtt://host:1883). Empty: MQTT ingestion is off, and the
# registration answer's empty broker keeps the agent reporting over HTTP.
SENSORSYNC_MQTT_BROKER_URL = env.str("SENSORSYNC_MQTT_BROKER_URL", default="")
# --- MQTT ingestion (ingest/; README "MQTT") ---
# Where the server and its ingestion workers reach the broker, when not at the devices' URL (say, on loopback).
SENSORSYNC_MQTT_URL = env.str("SENSORSYNC_MQTT_URL", default="") or SENSORSYNC_MQTT_BROKER_URL
# The broker's dynamic-security admin account, with which the server issues and revokes device credentials and the
# workers subscribe. Never in code: from the environment (or .env) only. Unset: MQTT ingestion is off.
SENSORSYNC_MQTT_ADMIN_USERNAME = env.str("SENSORSYNC_MQTT_ADMIN_USERNAME", default="")
SENSORSYNC_MQTT_ADMIN_PASSWORD = env.str("SENSORSYNC_MQTT_ADMIN_PASSWORD", default="")
# How long a request waits for the broker when it issues or revokes credentials.
SENSORSYNC_MQTT_TIMEOUT_SECONDS = env.float("SENSORSYNC_MQTT_TIMEOUT_SECONDS", default=3.0)
# Where each ingestion worker keeps its receipt journal (a small file per client id: when it first received each
# message it has not acknowledged, so that a redelivered message keeps its place in the device's order). On a disk
# that outlives the worker's process; `mqtt_ingest --journal-dir` overrides it.
SENSORSYNC_MQTT_JOURNAL_DIR = Path(env.str("SENSORSYNC_MQTT_JOURNAL_DIR", default=str(BASE_DIR / "var" / "mqtt")))
# --- end MQTT ingestion ---
# --- Retry budget (reconciliation/services/retry_budget.py; README "Retry budget") ---
# Failed applies of one target version after which a device is no longer retried at it until staff act; 0: no budget.
SENSORSYNC_RETRY_BUDGET = env.int("SENSORSYNC_RETRY_BUDGET", default=3)
# When the budget runs out, fall back to the last version the device fully deployed (a new version with its content).
SENSORSYNC_RETRY_BUDGET_FALLBACK = env.bool("SENSORSYNC_RETRY_BUDGET_FALLBACK", default=False)
# --- Outbound webhooks (webhooks/; README "Webhooks") ---
# One POST's deadline (connecting, sending, and the answer's status line and headers), in seconds.
SENSORSYNC_WEBHOOK_TIMEOUT_SECONDS = env.float("SENSORSYNC_WEBHOOK_TIMEOUT_SECONDS", default=10.0)
# Attempts of one delivery before it is marked failed; the wait before attempt n+1 is BACKOFF x 2^(n-1) (+-20 %),
# at most BACKOFF_MAX: with the defaults, 12 attempts over about 3.5 hours.
SENSORSYNC_WEBHOOK_MAX_ATTEMPTS = env.int("SENSORSYNC_WEBHOOK_MAX_ATTEMPTS", default=12)
SENSORSYNC_WEBHOOK_BACKOFF_SECONDS = env.float("SENSORSYNC_WEBHOOK_BACKOFF_SECONDS", default=10.0)
SENSORSYNC_WEBHOOK_BACKOFF_MAX_SECONDS = env.float("SENSORSYNC_WEBHOOK_BACKOFF_MAX_SECONDS", default=3600.0)
# How long each server process trusts what it read of the endpoints' subscriptions before reading them again: a new
# endpoint or event type is delivered from at most this long after it was saved (changes made in the same process,
# and deactivations and deletions anywhere, count at once).
SENSORSYNC_WEBHOOK_SUBSCRIPTIONS_TTL_SECONDS = env.float("SENSORSYNC_WEBHOOK_SUBSCRIPTIONS_TTL_SECONDS", default=5.0)
# Delivered and failed deliveries (with their attempts) are deleted this many days after they ended; 0 keeps them.
SENSORSYNC_WEBHOOK_RETENTION_DAYS = env.int("SENSORSYNC_WEBHOOK_RETENTION_DAYS", default=30)
# --- end webhooks ---
# --- Fleet configuration (fleetconfig/; README "Fleet configuration") ---
# A change of a template, an assignment or labels re-renders the devices it reaches. Up to this many devices, at once
# after the change commits (in the request); more, queued for the worker `manage.py render_fleet --watch`.
SENSORSYNC_RENDER_INLINE_MAX_DEVICES = env.int("SENSORSYNC_RENDER_INLINE_MAX_DEVICES", default=200)
# Devices read (and their problems written) per batch of a re-render; each device is written in its own transaction.
SENSORSYNC_RENDER_BATCH_SIZE = env.int("SENSORSYNC_RENDER_BATCH_SIZE", default=500)
# --- end fleet configuration ---
# Proxies whose X-Forwarded-For names the client (comma-separated addresses): nginx in front of gunicorn, which
# listens on loopback (deploy/nginx/sensorsync.conf). Per-address limits and the audit log then see the client.
SENSORSYNC_TRUSTED_PROXIES = frozenset(env.list("SENSORSYNC_TRUSTED_PROXIES", default=["127.0.0.1", "::1"]))
# Shared counters for several server processes, e.g. redis://127.0.0.1:6379/0; unset: per process.
SENSORSYNC_RATE_LIMIT_REDIS_URL = env.str("SENSORSYNC_RATE_LIMIT_REDIS_URL", default="")

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "default"},
    "ratelimit": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "ratelimit"},
}

# Production behind TLS: set these from the environment (see .env.example); manage.py check --deploy passes.
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=False)
if env.bool("DJANGO_SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# The agent's /healthz probe must not be redirected to HTTPS by a load balancer's plain-HTTP check.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "sensorsync_project.observability.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "sensorsync_project.observability.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": env.str("DJANGO_LOG_FORMAT", default="plain"),
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
    "loggers": {
        # Django's own console handler (DEBUG only) would print every request warning a second time.
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.db.backends": {"level": "INFO"},
    },
}
