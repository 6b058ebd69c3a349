"""Test settings: DATABASE_URL / REDIS_URL when set (CI: PostgreSQL, Redis), else SQLite and embedded Redis."""

from __future__ import annotations

import os

os.environ.setdefault("CREDENTIALS_KEYS", "lhMf7hrCrD6JbgQh4l6x_9uXfMD9ovdZbkhzyAcBGmE=")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 20)
# Test runs side by side on one machine never share a test database or Redis keys. The run id is
# fixed by the first process of a run and inherited by its xdist workers; processes that tests
# start (workers, servers) get the exact prefix of their test through TRADEBAAS_CHILD_PROCESS.
_run = os.environ.setdefault("TRADEBAAS_TEST_RUN", str(os.getpid()))
if not os.environ.get("TRADEBAAS_CHILD_PROCESS"):
    _worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    os.environ["REDIS_KEY_PREFIX"] = f"tbtest:{_run}:{_worker}:"

if not os.environ.get("REDIS_URL") and not os.environ.get("TRADEBAAS_EMBEDDED_REDIS_PORT"):
    # Each test run gets its own embedded Redis (exported to its workers through REDIS_URL).
    import socket

    with socket.socket() as _sock:
        _sock.bind(("127.0.0.1", 0))
        os.environ["TRADEBAAS_EMBEDDED_REDIS_PORT"] = str(_sock.getsockname()[1])

from .base import *
from .base import DATA_DIR, DATABASES, REST_FRAMEWORK

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
if "sqlite" in DATABASES["default"]["ENGINE"]:
    # A file, not memory: worker processes started by tests must see the same database.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-{_run}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{_run}"}
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {"user": "100000/min", "anon": "100000/min"},
}
TELEGRAM_API_BASE = (
    "http://127.0.0.1:9"  # tests that need Telegram start a local server and override this
)
