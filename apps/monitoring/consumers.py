"""The page's WebSocket: authenticated users only; receives HTML fragments for htmx."""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from . import live

log = logging.getLogger(__name__)
CLOSE_UNAUTHENTICATED = 4401


class LiveConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        await self.channel_layer.group_add(live.GROUP, self.channel_name)
        await self.accept()
        from . import metrics

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
            await self.channel_layer.group_discard(live.GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # The page sends nothing that changes state over the socket; actions go through HTTP.
        return

    async def live_html(self, event: dict) -> None:
        await self.send(text_data=event["html"])
