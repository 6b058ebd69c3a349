"""Page pushes: the saving process only asks for a render; the default worker renders once."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from apps.monitoring import live as monitoring_live
from apps.strategies.services import run_start
from apps.web import live
from tradebaas.redis import redis_client, rkey

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_state_change_queues_one_render_instead_of_rendering_here(monkeypatch):
    queued = []
    monkeypatch.setattr(
        "apps.web.tasks.live_state_render.apply_async", lambda **kw: queued.append(kw)
    )
    rendered = []
    monkeypatch.setattr(live, "render_state_fragments", lambda *a: rendered.append(1) or "")
    run_start(strategy="fast_test", params={}, instrument="BTC-PERPETUAL")  # several rows at once
    deadline = time.monotonic() + 5
    while not queued and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert queued == [{"queue": "default"}]  # one render for the burst
    assert rendered == []  # nothing rendered in the saving process
    assert redis_client().get(rkey(live.RENDER_PENDING_KEY)) == b"1"


async def test_the_render_task_pushes_the_whole_live_state_and_clears_the_flag():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(monitoring_live.GROUP, channel)
    redis_client().set(rkey(live.RENDER_PENDING_KEY), "1")
    await sync_to_async(live.render_and_push)()
    message = await asyncio.wait_for(layer.receive(channel), timeout=5)
    for element in (
        "header-status",
        "run-controls",
        "position-card",
        "checkpoints",
        "error-details",
    ):
        assert f'id="{element}"' in message["html"]
    assert redis_client().get(rkey(live.RENDER_PENDING_KEY)) is None
