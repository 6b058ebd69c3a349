"""A live stack for browser tests: daphne (HTTP + WebSocket) and the runner worker as real
processes on the test database, the Deribit simulator on loopback, and headless Chromium."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tradebaas.testing import celery_argv, child_env, free_port, running_process, wait_for

CHROMIUM = os.environ.get("TRADEBAAS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_available() -> bool:
    return Path(CHROMIUM).exists() or shutil.which("chromium") is not None


@dataclass
class LiveStack:
    url: str
    log_dir: Path


@contextlib.contextmanager
def live_stack(log_dir: Path, **env: str) -> Iterator[LiveStack]:
    port = free_port()
    environment = child_env(**env)
    web = [
        sys.executable,
        "-m",
        "daphne",
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "tradebaas.asgi:application",
    ]
    with (
        running_process(web, environment, log_dir / "web.log"),
        running_process(
            celery_argv("runner", "browser-runner"), environment, log_dir / "runner.log"
        ),
        running_process(
            celery_argv("default", "browser-default"), environment, log_dir / "default.log"
        ),
    ):
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(up, timeout=60, what="daphne to answer /healthz")
        yield LiveStack(url=url, log_dir=log_dir)


@pytest.fixture
def browser(monkeypatch):
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are
    # still synchronous. Only for the browser tests: never leak it into other tests' processes.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not chromium_available():
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def login(page, url: str, username: str, password: str) -> None:
    page.goto(f"{url}/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_selector("#strategy-card")
    # the page's scripts are deferred: a click before they ran (htmx, app.js) does nothing
    page.wait_for_load_state("load")
