"""Run the whole stack in the foreground: web (daphne), the runner worker, the default worker, beat.

``python -m tradebaas.supervisor`` (``make run``). Starts the embedded Redis when ``REDIS_URL`` is
unset, prefixes each process's output with its name, restarts a process that dies (like systemd's
``Restart=always``, with a back-off), and stops everything on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
COLORS = {
    "web": "36",
    "runner": "35",
    "worker": "33",
    "beat": "32",
    "telegram": "34",
    "supervisor": "37",
}


def commands(port: int) -> dict[str, list[str]]:
    python = sys.executable
    celery = [python, "-m", "celery", "-A", "tradebaas"]
    return {
        "web": [
            python,
            "-m",
            "daphne",
            "-b",
            os.environ.get("BIND", "127.0.0.1"),
            "-p",
            str(port),
            "--proxy-headers",
            "tradebaas.asgi:application",
        ],
        # One process, no time limit, tasks acknowledged on receipt: the loop is never redelivered.
        "runner": [
            *celery,
            "worker",
            "-Q",
            "runner",
            "-c",
            "1",
            "--prefetch-multiplier",
            "1",
            "-n",
            "runner@%h",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "INFO",
        ],
        "worker": [
            *celery,
            "worker",
            "-Q",
            "default",
            "-c",
            "2",
            "-n",
            "default@%h",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "INFO",
        ],
        "beat": [*celery, "beat", "-l", "INFO", "-s", str(data_dir() / "celerybeat-schedule")],
        # Telegram commands (idles cheaply while Telegram is not configured).
        "telegram": [python, "manage.py", "telegram_bot"],
    }


def data_dir() -> Path:
    return Path(os.environ.get("TRADEBAAS_DATA_DIR", BASE_DIR / "data"))


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    pids: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(self, children: dict[str, list[str]], color: bool) -> None:
        self.children = [Child(name, argv) for name, argv in children.items()]
        self.color = color
        self.stopping = threading.Event()
        self.width = max(len(name) for name in children)
        self.lock = threading.Lock()

    def say(self, name: str, line: str) -> None:
        prefix = f"{name:<{self.width}} |"
        if self.color:
            prefix = f"\033[{COLORS.get(name, '37')}m{prefix}\033[0m"
        with self.lock:
            sys.stdout.write(f"{prefix} {line}\n")
            sys.stdout.flush()

    def start(self, child: Child) -> None:
        child.proc = subprocess.Popen(
            child.argv,
            cwd=BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        child.started_at = time.monotonic()
        child.pids.append(child.proc.pid)
        self.say("supervisor", f"started {child.name} (pid {child.proc.pid})")
        threading.Thread(target=self.pump, args=(child, child.proc), daemon=True).start()

    def pump(self, child: Child, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.say(child.name, line.rstrip("\n"))

    def run(self) -> int:
        for child in self.children:
            self.start(child)
        while not self.stopping.wait(0.5):
            for child in self.children:
                code = child.proc.poll() if child.proc else None
                if code is None:
                    continue
                # Back off when a process dies right after its start (a broken config loops otherwise).
                quick = time.monotonic() - child.started_at < 10
                delay = min(30, 2 ** min(child.restarts, 5)) if quick else 1
                self.say("supervisor", f"{child.name} exited with {code}; restarting in {delay} s")
                if self.stopping.wait(delay):
                    break
                child.restarts += 1
                self.start(child)
        return self.shutdown()

    def shutdown(self) -> int:
        self.say("supervisor", "stopping all processes")
        for child in self.children:
            if child.proc and child.proc.poll() is None:
                os.killpg(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.proc.pid, signal.SIGKILL)
        self.say("supervisor", "stopped")
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument(
        "--only", nargs="*", help="start only these processes (web runner worker beat telegram)"
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradebaas.settings.base")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if not os.environ.get("REDIS_URL"):
        sys.path.insert(0, str(BASE_DIR))
        from tradebaas.embedded_redis import ensure_embedded_redis

        url = ensure_embedded_redis(data_dir())
        print(f"supervisor | embedded Redis at {url}", flush=True)

    children = commands(args.port)
    if args.only:
        children = {name: argv for name, argv in children.items() if name in args.only}
    supervisor = Supervisor(children, color=sys.stdout.isatty())

    def on_signal(signum, _frame) -> None:
        supervisor.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    supervisor.say(
        "supervisor", f"Tradebaas on http://127.0.0.1:{args.port}  (Ctrl-C stops everything)"
    )
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
