"""The restart story without systemd: under tradebaas/supervisor.py, kill -9 each process and see it
come back — web answers /healthz again, workers and beat beat again, the telegram bot runs again,
and the active run's loop resumes (a new loop takes the lock: new fence, fresh heartbeats)."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from apps.monitoring.health import heartbeats
from apps.strategies import services
from apps.strategies.models import StrategyRun
from tradebaas.testing import child_env, free_port, running_process, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.django_db(transaction=True)]
STARTED = re.compile(r"started (\w+) \(pid (\d+)\)")


def _pids(log: Path) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for name, pid in STARTED.findall(log.read_text(errors="replace")):
        found.setdefault(name, []).append(int(pid))
    return found


def _healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _worker_beating(queue: str, pid: int) -> bool:
    return any(
        name.startswith(f"worker:{queue}:") and name.endswith(f":{pid}") and age < 5
        for name, age in heartbeats().items()
    )


def _loop_running(run_id: int, newer_than: int = -1) -> tuple[int] | None:
    """(fence,) of the run's loop when it stamped its heartbeat in the last 5 s."""
    run = StrategyRun.objects.get(id=run_id)
    if run.heartbeat_at is None or time.time() - run.heartbeat_at.timestamp() > 5:
        return None
    return (run.fence,) if run.fence > newer_than else None


def test_every_process_comes_back_after_kill_9_and_the_run_resumes(tmp_path):
    port = free_port()
    log = tmp_path / "supervisor.log"
    env = child_env(PORT=str(port), TRADEBAAS_DATA_DIR=str(tmp_path))
    argv = [sys.executable, "-m", "tradebaas.supervisor", "--port", str(port)]
    run = services.run_start(strategy="fast_test", params={}, instrument="BTC-PERPETUAL")
    with running_process(argv, env, log) as supervisor:
        names = ("web", "runner", "worker", "beat", "telegram")
        first = wait_for(
            lambda: _pids(log) if all(n in _pids(log) for n in names) else None,
            timeout=60,
            what="all five processes started",
        )
        wait_for(lambda: _healthz(port), timeout=60, what="/healthz")
        wait_for(lambda: _worker_beating("runner", first["runner"][0]), 60, what="runner beat")
        wait_for(lambda: _worker_beating("default", first["worker"][0]), 60, what="worker beat")
        wait_for(lambda: heartbeats().get("beat", 99) < 5, 60, what="beat heartbeat")
        (fence_before,) = wait_for(lambda: _loop_running(run.id), 90, what="loop heartbeat")

        for name in names:
            victim = _pids(log)[name][-1]
            os.killpg(victim, signal.SIGKILL)  # the process and its pool children, no clean-up
            new_pid = wait_for(
                lambda name=name, victim=victim: (
                    next(
                        (p for p in _pids(log)[name] if p != victim and p not in first[name]), None
                    )
                    or (None if len(_pids(log)[name]) <= len(first[name]) else _pids(log)[name][-1])
                ),
                timeout=60,
                what=f"{name} restarted",
            )
            assert new_pid != victim
            if name == "web":
                wait_for(lambda: _healthz(port), 60, what="/healthz after the web restart")
            elif name == "runner":
                wait_for(lambda p=new_pid: _worker_beating("runner", p), 60, what="runner beats")
                # The loop resumes: beat's supervisor tick relaunches it once the lock expires.
                (fence_after,) = wait_for(
                    lambda: _loop_running(run.id, newer_than=fence_before),
                    timeout=90,
                    what="the run's loop resumed with a new fence",
                )
                assert fence_after > fence_before
            elif name == "worker":
                wait_for(lambda p=new_pid: _worker_beating("default", p), 60, what="worker beats")
            elif name == "beat":
                time.sleep(6)
                wait_for(lambda: heartbeats().get("beat", 99) < 5, 60, what="beat beats again")
            elif name == "telegram":
                time.sleep(3)
                assert _alive(new_pid)
        assert supervisor.poll() is None
        text = log.read_text(errors="replace")
        for name in names:
            assert re.search(rf"{name} exited with -9; restarting", text), name
        run.refresh_from_db()
        assert run.is_active and run.state != "ERROR", run.error_message
