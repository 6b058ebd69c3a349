"""The live WebSocket: anonymous sockets are closed; a logged-in page receives pushed fragments."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from apps.monitoring.live import alive_push
from tradebaas.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://127.0.0.1:8000")


async def test_anonymous_socket_is_closed():
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=[ORIGIN])
    connected, code = await communicator.connect()
    assert not connected
    assert code == 4401


async def test_foreign_origin_is_refused(user, client):
    await database_sync_to_async(client.force_login)(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    communicator = WebsocketCommunicator(
        application,
        "/ws/live/",
        headers=[(b"origin", b"http://evil.example"), (b"cookie", cookie.encode())],
    )
    connected, _ = await communicator.connect()
    assert not connected


async def test_logged_in_socket_receives_pushed_fragments(user, client):
    await database_sync_to_async(client.force_login)(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    communicator = WebsocketCommunicator(
        application, "/ws/live/", headers=[ORIGIN, (b"cookie", cookie.encode())]
    )
    connected, _ = await communicator.connect()
    assert connected
    while not await communicator.receive_nothing(timeout=0.3):
        await communicator.receive_from()  # the initial state, if any renderer is registered
    await alive_push('<div id="run-state" hx-swap-oob="true">ANALYZING</div>')
    message = await communicator.receive_from(timeout=5)
    assert "ANALYZING" in message
    await communicator.disconnect()


@pytest.mark.slow
async def test_an_idle_socket_stays_open_and_still_receives(user, client):
    """redis-py's default read timeout once killed every socket idle for more than 5 s."""
    import asyncio

    await database_sync_to_async(client.force_login)(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    communicator = WebsocketCommunicator(
        application, "/ws/live/", headers=[ORIGIN, (b"cookie", cookie.encode())]
    )
    connected, _ = await communicator.connect()
    assert connected
    while not await communicator.receive_nothing(timeout=0.3):
        await communicator.receive_from()
    await asyncio.sleep(7)
    await alive_push('<div id="idle-check" hx-swap-oob="true">still here</div>')
    assert "still here" in await communicator.receive_from(timeout=5)
    await communicator.disconnect()
