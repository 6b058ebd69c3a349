"""Settings shared by every environment. Everything comes from the environment through one ``environ.Env``.

The defaults make the one-command demo work on a fresh machine: a SQLite file under ``data/``, the
embedded Redis, a secret key and a credentials key generated once and kept under ``data/``.
Production (``tradebaas.settings.production``) requires every secret explicitly.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent
DATA_DIR = Path(os.environ.get("TRADEBAAS_DATA_DIR", BASE_DIR / "data"))

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def required(name: str, cast=str):
    """A variable that must be set; stops start-up with a message that names it."""
    if name not in os.environ or os.environ[name].strip() == "":
        raise ImproperlyConfigured(f"Set the {name} environment variable (it is required here).")
    try:
        return env(name, cast=cast) if cast is not str else env.str(name)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"{name} is malformed: {exc}") from exc


def _persisted_secret(filename: str, make) -> str:
    """A development secret generated once and kept in DATA_DIR (never used in production)."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / filename
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def parse_credentials_keys(raw: str) -> list[str]:
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    if not keys:
        raise ImproperlyConfigured("CREDENTIALS_KEYS is empty: give one or more Fernet keys.")
    for index, key in enumerate(keys):
        try:
            Fernet(key)
        except (ValueError, TypeError) as exc:
            raise ImproperlyConfigured(
                f"CREDENTIALS_KEYS is malformed: key #{index + 1} is not a Fernet key "
                "(make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            ) from exc
    return keys


def database_config(url: str) -> dict:
    scheme = url.split("://", 1)[0]
    if scheme not in ("sqlite", "postgres", "postgresql", "pgsql", "psql"):
        raise ImproperlyConfigured(
            f"DATABASE_URL is malformed: scheme {scheme!r} is not sqlite:// or postgres://"
        )
    try:
        config = environ.Env.db_url_config(url)
    except Exception as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is malformed: {exc}") from exc
    if not config.get("ENGINE"):
        raise ImproperlyConfigured(f"DATABASE_URL has an unsupported scheme: {url.split(':')[0]}")
    if "postgresql" in config["ENGINE"]:
        pool_size = env.int("DATABASE_POOL_MAX_SIZE", default=0)
        if pool_size > 0:
            # A psycopg pool per process (web under ASGI: one thread per request would otherwise
            # hold one persistent connection each). Django requires CONN_MAX_AGE = 0 with a pool.
            config["CONN_MAX_AGE"] = 0
            config.setdefault("OPTIONS", {})["pool"] = {
                "min_size": 1,
                "max_size": pool_size,
                "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
            }
        else:
            config["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
            config["CONN_HEALTH_CHECKS"] = True
    if "sqlite" in config["ENGINE"]:
        config.setdefault("OPTIONS", {})
        config["OPTIONS"].update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
    return config


def redis_url() -> str:
    url = env.str("REDIS_URL", default="")
    if not url:
        from tradebaas.embedded_redis import ensure_embedded_redis

        return ensure_embedded_redis(DATA_DIR)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(
            "REDIS_URL is malformed: it must start with redis://, rediss:// or unix://"
        )
    return url


DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="") or _persisted_secret(
    "secret_key", lambda: secrets.token_urlsafe(50)
)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
CREDENTIALS_KEYS = parse_credentials_keys(
    env.str("CREDENTIALS_KEYS", default="")
    or _persisted_secret("credentials_key", lambda: Fernet.generate_key().decode())
)
SENTRY_DSN = env.str("SENTRY_DSN", default="")
REDIS_URL = redis_url()
# Keys in Redis (locks, heartbeats, throttles) start with this, so tests can run side by side.
REDIS_KEY_PREFIX = env.str("REDIS_KEY_PREFIX", default="tradebaas:")

# daphne runs the web process directly (python -m daphne): it is not an installed app, so the
# workers do not load twisted and autobahn.
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_htmx",
    "corsheaders",
    "channels",
    "apps.monitoring",
    "apps.brokers",
    "apps.risk",
    "apps.strategies",
    "apps.orders",
    "apps.web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "apps.monitoring.middleware.LoginRequiredMiddleware",
]

ROOT_URLCONF = "tradebaas.urls"
ASGI_APPLICATION = "tradebaas.asgi.application"
WSGI_APPLICATION = "tradebaas.wsgi.application"

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

DATABASES = {
    "default": database_config(
        env.str("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'tradebaas.sqlite3'}")
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": REDIS_KEY_PREFIX + "cache",
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 reads with a 5 s timeout by default, the same as channels_redis' blocking
            # pop: an idle socket then dies every few seconds. Read longer than the pop blocks.
            "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
            "prefix": REDIS_KEY_PREFIX + "asgi",
            "capacity": 500,
        },
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"
# Failed logins per (address, username) within the window before the form refuses more tries.
LOGIN_THROTTLE_ATTEMPTS = env.int("LOGIN_THROTTLE_ATTEMPTS", default=5)
LOGIN_THROTTLE_WINDOW = env.int("LOGIN_THROTTLE_WINDOW", default=300)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header turns an anonymous request into 401, not 403.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.monitoring.api_errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.UserRateThrottle",
        "rest_framework.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env.str("API_RATE_USER", default="6000/min"),
        "anon": env.str("API_RATE_ANON", default="60/min"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Tradebaas API",
    "DESCRIPTION": "Broker accounts, risk, strategies, runs, brackets and trades.",
    "VERSION": "2.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v2",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
}

# Live-page WebSockets: new connections per user and per address ("N/sec|min|hour"), and how many
# sockets one user may hold open at once in one web process.
WS_CONNECT_RATE = env.str("WS_CONNECT_RATE", default="120/min")
WS_MAX_SOCKETS_PER_USER = env.int("WS_MAX_SOCKETS_PER_USER", default=50)

CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/api/.*$"

# Celery: JSON only; the beat schedule lives in tradebaas/celery.py.
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_RESULT_EXPIRES = 3600

# Brokers
TRADEBAAS_DERIBIT_URL = env.str("TRADEBAAS_DERIBIT_URL", default="")
# Telegram Bot API base URL: tests point it at a local server.
TELEGRAM_API_BASE = env.str("TELEGRAM_API_BASE", default="https://api.telegram.org")
# Paper broker: candles shipped with the project, replay speed (N x real time, or 0 = as fast as possible)
PAPER_SPEED = env.float("TRADEBAAS_PAPER_SPEED", default=60.0)
# Who may scrape /metrics without logging in.
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"])

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="json")  # json or text
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "apps.monitoring.logging.ContextFilter"}},
    "formatters": {
        "json": {"()": "apps.monitoring.logging.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "websockets": {"level": "WARNING"},
    },
}

if SENTRY_DSN:
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration
    from sentry_sdk.integrations.redis import RedisIntegration

    sentry_sdk.init(
        dsn=SENTRY_DSN,
        integrations=[
            DjangoIntegration(),
            CeleryIntegration(),
            RedisIntegration(),
            LoggingIntegration(),
        ],
        send_default_pii=False,
        traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
        environment=env.str("SENTRY_ENVIRONMENT", default="production"),
    )

# Queues live under our prefix too, so parallel test runs and a shared Redis never steal tasks.
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": REDIS_KEY_PREFIX}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"global_keyprefix": REDIS_KEY_PREFIX}
