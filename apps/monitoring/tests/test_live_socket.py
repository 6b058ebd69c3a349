"""The live WebSocket: anonymous sockets are closed; a logged-in page receives pushed fragments."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from apps.monitoring.consumers import CLOSE_FOREIGN_ORIGIN, CLOSE_UNAUTHENTICATED
from apps.monitoring.live import alive_push
from tradebaas.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://127.0.0.1:8000")


def _listens_on_the_channel_layer() -> bool:
    """Whether a consumer in this event loop opened the Redis channel layer (channels_redis makes
    its per-loop connections on first use)."""
    import asyncio

    from channels.layers import get_channel_layer

    return asyncio.get_running_loop() in get_channel_layer()._layers


async def test_anonymous_socket_is_closed_without_touching_the_channel_layer():
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=[ORIGIN])
    connected, code = await communicator.connect()
    assert not connected
    assert code == CLOSE_UNAUTHENTICATED
    await communicator.disconnect()  # the refused consumer ends at once
    assert not _listens_on_the_channel_layer()


async def test_foreign_origin_is_refused(user, client):
    await database_sync_to_async(client.force_login)(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    communicator = WebsocketCommunicator(
        application,
        "/ws/live/",
        headers=[(b"origin", b"http://evil.example"), (b"cookie", cookie.encode())],
    )
    connected, code = await communicator.connect()
    assert not connected
    assert code == CLOSE_FOREIGN_ORIGIN
    await communicator.disconnect()
    assert not _listens_on_the_channel_layer()


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


async def test_pushes_queued_by_the_loops_thread_arrive_in_order(user, client):
    """The strategy loop's thread hands its fragments to one sender thread; each arrives as
    its own message, in the order pushed."""
    import asyncio
    import threading

    from apps.monitoring.live import live_push, pushes_in_background

    await database_sync_to_async(client.force_login)(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    communicator = WebsocketCommunicator(
        application, "/ws/live/", headers=[ORIGIN, (b"cookie", cookie.encode())]
    )
    connected, _ = await communicator.connect()
    assert connected
    while not await communicator.receive_nothing(timeout=0.3):
        await communicator.receive_from()

    def loop_thread() -> None:
        pushes_in_background()
        for n in range(5):
            live_push(f'<div id="n{n}" hx-swap-oob="true">{n}</div>')

    thread = threading.Thread(target=loop_thread)
    thread.start()
    await asyncio.get_running_loop().run_in_executor(None, thread.join)
    received = [await communicator.receive_from(timeout=5) for _ in range(5)]
    assert [f'id="n{n}"' in message for n, message in enumerate(received)] == [True] * 5
    await communicator.disconnect()


def test_the_loops_thread_does_not_wait_for_a_slow_channel_layer(monkeypatch):
    import asyncio
    import threading

    from apps.monitoring import live

    gate, returned = threading.Event(), threading.Event()
    sent: list[str] = []

    async def slow_layer(html: str) -> None:
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 10)
        sent.append(html)

    monkeypatch.setattr(live, "alive_push", slow_layer)

    def loop_thread() -> None:
        live.pushes_in_background()
        live.live_push("a")
        live.live_push("b")
        returned.set()

    threading.Thread(target=loop_thread).start()
    assert returned.wait(5), "the pushing thread waited for the channel layer"
    assert sent == []
    gate.set()
    for _ in range(100):
        if len(sent) == 2:
            break
        threading.Event().wait(0.05)
    assert sent == ["a", "b"]
