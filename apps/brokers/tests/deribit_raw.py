"""A raw JSON-RPC client over ``websockets`` for the simulator tests (not the project's client:
these tests check the wire itself)."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import websockets

_ids = itertools.count(1)


class RawClient:
    """Sends requests and keeps every id-less message (notifications, heartbeats) it sees."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.notifications: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, url: str) -> RawClient:
        return cls(await websockets.connect(url, max_size=2**22))

    async def close(self) -> None:
        await self.ws.close()

    async def send(self, message: Any) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def request(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 5.0
    ) -> dict[str, Any]:
        """The whole answer message (with ``result`` or ``error``) to one request."""
        request_id = next(_ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)
        return await self.answer_to(request_id, timeout=timeout)

    async def answer_to(self, request_id: Any, *, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self.ws.recv())
                if "id" in message and message["id"] == request_id:
                    return message
                if "id" not in message and "method" in message:
                    self.notifications.append(message)

    async def result(self, method: str, params: dict[str, Any] | None = None) -> Any:
        answer = await self.request(method, params)
        assert "error" not in answer, f"{method} failed: {answer['error']}"
        return answer["result"]

    async def next_message(self, *, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            return json.loads(await self.ws.recv())

    async def notification(
        self, channel: str | None = None, *, timeout: float = 5.0, method: str = "subscription"
    ) -> dict[str, Any]:
        """The next notification (already received or still to come) of ``channel``."""
        async with asyncio.timeout(timeout):
            while True:
                for index, message in enumerate(self.notifications):
                    if message.get("method") == method and (
                        channel is None or message["params"].get("channel") == channel
                    ):
                        return self.notifications.pop(index)
                message = json.loads(await self.ws.recv())
                if "id" not in message:
                    self.notifications.append(message)

    async def auth(self, client_id: str = "paper", client_secret: str = "paper") -> dict[str, Any]:
        return await self.result(
            "public/auth",
            {
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret,
            },
        )
