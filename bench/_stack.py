"""Shared by the benchmarks: a scratch database, a user with a token and a session, and the
project's real processes (daphne, Celery workers, beat, the simulator) started against them.

    with Stack("api", extra_env={...}) as stack:
        web = stack.start_web()
        ...

PostgreSQL (``BENCH_DATABASE_URL``, default ``postgres://postgres@127.0.0.1:5432/postgres``: a
scratch database ``tradebaas_bench_<name>_<pid>`` is created next to it and dropped afterwards)
and Redis (``REDIS_URL``, default ``redis://127.0.0.1:6379/0``, keys under a unique prefix that is
deleted afterwards).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PYTHON = sys.executable


# As deploy/systemd/tradebaas-web.service: under ASGI every request runs its sync view in its own
# thread, so persistent connections (CONN_MAX_AGE > 0) pile up one per thread until PostgreSQL
# refuses more ("too many clients"). The web process uses a bounded psycopg pool instead.
WEB_ENV = {"DATABASE_POOL_MAX_SIZE": os.environ.get("BENCH_DATABASE_POOL_MAX_SIZE", "8")}


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages (a forked worker's, copied on write) split fairly."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Stack:
    def __init__(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix=f"tradebaas-bench-{name}-"))
        admin = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
        self.admin_url = admin
        self.db_name = f"tradebaas_bench_{name}_{os.getpid()}"
        self.db_url = admin.rsplit("/", 1)[0] + "/" + self.db_name
        self.prefix = f"bench:{name}:{os.getpid()}:"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tradebaas.settings.base",
            "DATABASE_URL": self.db_url,
            "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            "REDIS_KEY_PREFIX": self.prefix,
            "TRADEBAAS_DATA_DIR": str(self.tmp),
            "SECRET_KEY": "bench-secret-key-" + "x" * 50,
            "CREDENTIALS_KEYS": "lhMf7hrCrD6JbgQh4l6x_9uXfMD9ovdZbkhzyAcBGmE=",
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            **(extra_env or {}),
        }
        self.procs: list[subprocess.Popen] = []
        self.port = 0

    # -- setup / teardown -----------------------------------------------------------------------
    def __enter__(self) -> Stack:
        subprocess.run(
            ["psql", f"--dbname={self.admin_url}", "-qc", f'CREATE DATABASE "{self.db_name}"'],
            check=True,
        )
        os.environ.update({k: v for k, v in self.env.items() if k not in ("PYTHONPATH",)})
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token

        self.user = get_user_model().objects.create_user(
            username="bench", password="bench-password-123", is_staff=True
        )
        self.token = Token.objects.create(user=self.user).key
        return self

    def session_cookie(self) -> str:
        from django.conf import settings
        from django.test import Client

        client = Client()
        client.force_login(self.user)
        return (
            f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
        )

    def __exit__(self, *exc) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        from django.db import connections

        connections.close_all()
        subprocess.run(
            [
                "psql",
                f"--dbname={self.admin_url}",
                "-qc",
                f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)',
            ],
            check=False,
        )
        with contextlib.suppress(Exception):
            import redis

            client = redis.Redis.from_url(self.env["REDIS_URL"])
            keys = list(client.scan_iter(match=self.prefix + "*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])

    # -- processes ------------------------------------------------------------------------------
    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc.log_path = self.tmp / f"{name}.log"  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def start_web(self) -> subprocess.Popen:
        self.port = free_port()
        proc = self.start(
            "web",
            [
                PYTHON,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "tradebaas.asgi:application",
            ],
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/healthz", timeout=1),
            ):
                return proc
            if proc.poll() is not None:
                raise RuntimeError(f"web exited: {proc.log_path.read_text()[-2000:]}")  # type: ignore[attr-defined]
            time.sleep(0.2)
        raise TimeoutError("web did not answer /healthz")

    def start_worker(self, queue: str, concurrency: int = 1, **env: str) -> subprocess.Popen:
        argv = [
            PYTHON, "-m", "celery", "-A", "tradebaas", "worker", "-Q", queue,
            "-c", str(concurrency), "--prefetch-multiplier", "1", "-n", f"{queue}-bench@%h",
            "--without-mingle", "--without-gossip", "-l", "WARNING",
        ]  # fmt: skip
        return self.start(f"worker-{queue}", argv, env)

    def start_beat(self) -> subprocess.Popen:
        argv = [PYTHON, "-m", "celery", "-A", "tradebaas", "beat", "-l", "WARNING",
                "-s", str(self.tmp / "celerybeat-schedule")]  # fmt: skip
        return self.start("beat", argv)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
