"""sd_notify over a real Unix datagram socket, as systemd receives it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from apps.monitoring import watchdog


@pytest.fixture
def systemd(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(3)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("TRADEBAAS_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    yield sock
    sock.close()


def _drain(sock) -> list[str]:
    sock.setblocking(False)
    out = []
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    sock.setblocking(True)
    return out


def test_nothing_is_sent_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert watchdog.notify_ready() is False
    assert watchdog.watchdog_ping() is False


def test_ready_and_watchdog_messages_reach_the_socket(systemd):
    assert watchdog.notify_ready("celery worker ready")
    message = systemd.recv(4096).decode().split("\n")
    assert "READY=1" in message and f"MAINPID={os.getpid()}" in message
    assert watchdog.watchdog_ping()
    assert systemd.recv(4096) == b"WATCHDOG=1"


def test_watchdog_interval_is_half_of_watchdog_sec(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert watchdog.watchdog_interval() == 15
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog.watchdog_interval() is None


def test_idle_keepalive_stops_feeding_while_a_loop_is_registered(systemd, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # pings every 0.5 s
    stop = threading.Event()
    watchdog.start_idle_keepalive(stop)
    assert systemd.recv(4096) == b"WATCHDOG=1"  # idle: the main process feeds it
    with watchdog.loop_guard():
        assert watchdog.loop_running()
        _drain(systemd)
        systemd.settimeout(1.5)
        # a hung loop (no watchdog_ping calls) means silence, so systemd would restart us
        with pytest.raises(TimeoutError):
            systemd.recv(4096)
    assert not watchdog.loop_running()
    systemd.settimeout(3)
    assert systemd.recv(4096) == b"WATCHDOG=1"
    stop.set()


def test_idle_keepalive_keeps_feeding_and_never_claims_the_loop_marker(systemd, monkeypatch):
    """An idle worker must be fed for as long as it is idle, not once: its own pings must not
    make it look like a loop is running."""
    monkeypatch.setenv("WATCHDOG_USEC", "500000")  # pings every 0.25 s
    stop = threading.Event()
    watchdog.start_idle_keepalive(stop)
    try:
        for _ in range(4):
            assert systemd.recv(4096) == b"WATCHDOG=1"
            assert not watchdog.loop_running()
    finally:
        stop.set()


def test_marker_of_a_dead_loop_process_is_ignored(systemd, tmp_path):
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    (tmp_path / "tradebaas-runner-loop.pid").write_text(child.stdout.strip())
    assert not watchdog.loop_running()
    assert not (tmp_path / "tradebaas-runner-loop.pid").exists()


def test_first_loop_ping_registers_and_task_end_unregisters(systemd):
    assert not watchdog.loop_running()
    assert watchdog.watchdog_ping()  # the loop's first ping
    assert watchdog.loop_running()
    watchdog.loop_finished()  # what task_postrun does
    assert not watchdog.loop_running()
