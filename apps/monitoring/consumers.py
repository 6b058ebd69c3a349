"""The page's WebSocket: authenticated users only; receives HTML fragments for htmx.

A socket we turn away (a foreign origin, no login, over the limits) is closed by ``Refused``,
which has no channel layer: channels gives every consumer a channel and a blocking Redis read
on it for as long as its client stays, which a refused socket must not cost.
"""

from __future__ import annotations

import logging
from urllib.parse import urlparse

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import OriginValidator
from django.conf import settings

from . import live

log = logging.getLogger(__name__)
CLOSE_UNAUTHENTICATED = 4401
CLOSE_RATE_LIMITED = 4429
CLOSE_FOREIGN_ORIGIN = 4403


class Refused(AsyncWebsocketConsumer):
    """Closes the socket with ``code`` at its handshake; listens on no channel layer."""

    channel_layer_alias = "refused sockets have none"  # not in CHANNEL_LAYERS: no layer

    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code

    async def connect(self) -> None:
        await self.close(code=self.code)


class SameOriginOnly(OriginValidator):
    """channels' ``AllowedHostsOriginValidator``, turning foreign origins away with ``Refused``
    (channels' own denier listens on the channel layer)."""

    def __init__(self, application) -> None:
        allowed = settings.ALLOWED_HOSTS
        if settings.DEBUG and not allowed:
            allowed = ["localhost", "127.0.0.1", "[::1]"]
        super().__init__(application, allowed)

    async def __call__(self, scope, receive, send):
        origin = None
        for name, value in scope.get("headers", []):
            if name == b"origin":
                try:
                    origin = urlparse(value.decode("latin1"))
                except (UnicodeDecodeError, ValueError):
                    origin = None
        if self.valid_origin(origin):
            return await self.application(scope, receive, send)
        log.warning("websocket refused: origin %r not allowed", origin and origin.geturl())
        return await Refused(code=CLOSE_FOREIGN_ORIGIN)(scope, receive, send)


class LiveConsumer(AsyncWebsocketConsumer):
    async def __call__(self, scope, receive, send):
        code = self._refusal(scope)
        if code is not None:
            return await Refused(code=code)(scope, receive, send)
        return await super().__call__(scope, receive, send)

    def _refusal(self, scope) -> int | None:
        """The close code if this socket is turned away, else None (the socket is then counted
        against the trader's limit until it disconnects)."""
        user = scope.get("user")
        if user is None or not user.is_authenticated:
            return CLOSE_UNAUTHENTICATED
        from . import metrics, ws_limits

        address = (scope.get("client") or ["unknown"])[0]
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
            return CLOSE_RATE_LIMITED
        self._user_id = user.pk  # counted by socket_opened: released in disconnect
        return None

    async def connect(self) -> None:
        await self.channel_layer.group_add(live.GROUP, self.channel_name)
        await self.accept()
        from . import metrics

        metrics.WEBSOCKET_CLIENTS.inc()
        self._counted = True
        # The whole state on every (re)connect: messages sent while we were away may be lost.
        for render in live.INITIAL_STATE_RENDERERS:
            html = await database_sync_to_async(render)(self.scope["user"])
            if html:
                await self.send(text_data=html)

    async def disconnect(self, code: int) -> None:
        from . import metrics, ws_limits

        if getattr(self, "_counted", False):
            metrics.WEBSOCKET_CLIENTS.dec()
            self._counted = False
        if getattr(self, "_user_id", None) is not None:
            ws_limits.socket_closed(self._user_id)
            self._user_id = None
            await self.channel_layer.group_discard(live.GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # The page sends nothing that changes state over the socket; actions go through HTTP.
        return

    async def live_html(self, event: dict) -> None:
        await self.send(text_data=event["html"])
