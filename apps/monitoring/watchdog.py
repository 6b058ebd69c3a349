"""systemd readiness and watchdog notifications (sd_notify) without any dependency.

The runner worker runs under ``Type=notify`` with ``WatchdogSec=`` and ``NotifyAccess=all``:

- the worker's main process sends ``READY=1`` when Celery is ready (``worker_ready`` signal, see
  ``apps/monitoring/signals.py``) and keeps the watchdog fed while **no** loop runs;
- the strategy loop, running in the worker's child process, calls ``watchdog_ping()`` on every
  pass; its first ping registers the process as the loop's (a marker file with its pid), and the
  end of the Celery task (``task_postrun``) unregisters it (``loop_guard()`` does both explicitly).
  While a loop is registered only the loop feeds the watchdog: a hung loop stops the pings and
  systemd kills and restarts the worker. A dead loop process's marker is ignored.

Every function is a no-op when ``$NOTIFY_SOCKET`` is unset (development, tests, the supervisor).
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path


def _address() -> str | None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return None
    if address.startswith("@"):  # abstract namespace
        return "\0" + address[1:]
    return address


def sd_notify(*lines: str) -> bool:
    """Send ``KEY=VALUE`` lines to systemd. Returns False when not under systemd or on error."""
    address = _address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
        return True
    except OSError:
        return False


def notify_ready(status: str = "ready") -> bool:
    return sd_notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")


def notify_status(status: str) -> bool:
    return sd_notify(f"STATUS={status}")


def notify_stopping() -> bool:
    return sd_notify("STOPPING=1")


def watchdog_interval() -> float | None:
    """Seconds between pings systemd expects (half of WatchdogSec), or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit():
        return None
    return int(usec) / 1_000_000 / 2


def _marker() -> Path:
    base = os.environ.get("RUNTIME_DIRECTORY") or os.environ.get(
        "TRADEBAAS_RUNTIME_DIR", tempfile.gettempdir()
    )
    return Path(base.split(":")[0]) / "tradebaas-runner-loop.pid"


_registered: tuple[int, Path] | None = None


def watchdog_ping() -> bool:
    """Feed the watchdog (call from inside the loop, at least every WatchdogSec/2).

    The first ping in a process registers it as the loop's process (the main process's idle
    keepalive then stays silent) until ``loop_finished()`` — called for every finished Celery
    task (``task_postrun``), so a loop task that returns hands the watchdog back.
    """
    global _registered
    if _address() is None:
        return False
    me = (os.getpid(), _marker())
    if _registered != me:
        with contextlib.suppress(OSError):
            me[1].write_text(str(me[0]))
        _registered = me
    return sd_notify("WATCHDOG=1")


def loop_finished() -> None:
    """This process no longer runs a loop: remove its marker (if it is ours)."""
    global _registered
    _registered = None
    with contextlib.suppress(OSError):
        marker = _marker()
        if marker.read_text().strip() == str(os.getpid()):
            marker.unlink()


@contextlib.contextmanager
def loop_guard() -> Iterator[None]:
    """Mark a strategy loop as running in this process: the main process stops its idle pings."""
    watchdog_ping()
    try:
        yield
    finally:
        loop_finished()


def loop_running() -> bool:
    """True while a live process holds the loop marker (a dead holder's marker is removed)."""
    marker = _marker()
    try:
        pid = int(marker.read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        with contextlib.suppress(OSError):
            marker.unlink()
        return False
    except PermissionError:
        return True
    return True


def start_idle_keepalive(stop: threading.Event | None = None) -> threading.Thread | None:
    """In the worker's main process: feed the watchdog while no loop is registered."""
    interval = watchdog_interval()
    if interval is None or _address() is None:
        return None
    stop = stop or threading.Event()

    def keepalive() -> None:
        while not stop.is_set():
            if not loop_running():
                # a bare ping: ``watchdog_ping`` would register this process as the loop's,
                # and the keepalive would then fall silent for good (systemd restarts an idle
                # worker every WatchdogSec)
                sd_notify("WATCHDOG=1")
            stop.wait(max(0.25, interval / 2))

    thread = threading.Thread(target=keepalive, name="tradebaas-watchdog", daemon=True)
    thread.start()
    return thread
