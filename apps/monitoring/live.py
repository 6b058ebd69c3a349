"""Push to every open page: HTML fragments (htmx ``hx-swap-oob``) over the Channels group ``live``.

Saving comes first, pushing second: a page that missed a message re-reads the whole state when its
socket reconnects, because the channel layer may drop messages. A push never raises into the caller.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)
GROUP = "live"

# Functions that render the page's whole live state as fragments for a newly connected socket.
# The web page registers its renderer here (see apps/monitoring/consumers.py).
INITIAL_STATE_RENDERERS: list = []


def live_push(html: str) -> None:
    """Send fragments to every connected page (sync callers). From a thread that asked for
    ``pushes_in_background`` (the strategy loop) the fragments are queued and sent by one
    helper thread, in order, so the caller never waits on the channel layer."""
    if getattr(_local, "background", False):
        _background.put(html)
        return
    try:
        async_to_sync(alive_push)(html)
    except Exception:
        log.warning("live push failed", exc_info=True)


def pushes_in_background(on: bool = True) -> None:
    """This thread's pushes from now on: queued for the helper thread (``on``) or sent at once."""
    _local.background = on


class _Background:
    """One thread with its own event loop sending queued fragments in order, one message each
    (as a direct push sends them: the page parses each message on its own)."""

    LIMIT = 1000  # fragments waiting; more are dropped (the page re-reads on reconnect)

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def put(self, html: str) -> None:
        if self.queue.qsize() >= self.LIMIT:
            log.warning("live push dropped: %d fragments waiting", self.queue.qsize())
            return
        self.queue.put(html)
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="live-send", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            while True:
                html = self.queue.get()
                loop.run_until_complete(alive_push(html))
        finally:  # pragma: no cover - the thread lives as long as its process
            loop.close()


_local = threading.local()
_background = _Background()


async def alive_push(html: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(GROUP, {"type": "live.html", "html": html})
    except Exception:
        log.warning("live push failed", exc_info=True)
