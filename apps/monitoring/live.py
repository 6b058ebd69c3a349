"""Push to every open page: HTML fragments (htmx ``hx-swap-oob``) over the Channels group ``live``.

Saving comes first, pushing second: a page that missed a message re-reads the whole state when its
socket reconnects, because the channel layer may drop messages. A push never raises into the caller.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)
GROUP = "live"

# Functions that render the page's whole live state as fragments for a newly connected socket.
# The web page registers its renderer here (see apps/monitoring/consumers.py).
INITIAL_STATE_RENDERERS: list = []


def live_push(html: str) -> None:
    """Send fragments to every connected page (sync callers)."""
    try:
        async_to_sync(alive_push)(html)
    except Exception:
        log.warning("live push failed", exc_info=True)


async def alive_push(html: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(GROUP, {"type": "live.html", "html": html})
    except Exception:
        log.warning("live push failed", exc_info=True)
