"""The page's WebSocket: authenticated users only; receives HTML fragments for htmx."""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from . import live

log = logging.getLogger(__name__)
CLOSE_UNAUTHENTICATED = 4401
CLOSE_RATE_LIMITED = 4429


class LiveConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        from . import metrics, ws_limits

        address = (self.scope.get("client") or ["unknown"])[0]
        try:
            # One pipelined Redis round trip (well under a millisecond on loopback), done inline:
            # an executor thread per connection outlived its socket in the tests' event loops.
            refused = ws_limits.connect_allowed(user_id=user.pk, address=address)
        except Exception:  # Redis down: do not lock traders out of their page
            log.warning("websocket rate limit unavailable", exc_info=True)
            refused = None
        if refused is None and not ws_limits.socket_opened(user.pk):
            refused = "too_many_sockets"
        if refused is not None:
            metrics.WEBSOCKET_REFUSED.labels(reason=refused).inc()
            log.warning("websocket refused (%s) for user %s from %s", refused, user.pk, address)
            await self.close(code=CLOSE_RATE_LIMITED)
            return
        self._user_id = user.pk
        await self.channel_layer.group_add(live.GROUP, self.channel_name)
        await self.accept()
        metrics.WEBSOCKET_CLIENTS.inc()
        self._counted = True
        # The whole state on every (re)connect: messages sent while we were away may be lost.
        for render in live.INITIAL_STATE_RENDERERS:
            html = await database_sync_to_async(render)(user)
            if html:
                await self.send(text_data=html)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "_counted", False):
            from . import metrics

            metrics.WEBSOCKET_CLIENTS.dec()
            self._counted = False
            from . import ws_limits

            ws_limits.socket_closed(self._user_id)
            await self.channel_layer.group_discard(live.GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # The page sends nothing that changes state over the socket; actions go through HTTP.
        return

    async def live_html(self, event: dict) -> None:
        await self.send(text_data=event["html"])
