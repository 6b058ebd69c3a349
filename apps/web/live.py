"""Keep open pages current: whenever a run, a bracket, an order, a trade or the broker account
changes, the page's live pieces are rendered again and pushed as out-of-band fragments.

The process that saved (often the strategy loop) only asks for a render: a background thread,
after the commit and coalescing a burst of saves, sets a Redis flag and queues one render task
on the default worker. Rendering (database reads, templates) never runs in the trading process.
A socket that (re)connects gets everything at once from the consumer.
"""

from __future__ import annotations

import logging
import threading

from django.db import transaction
from django.db.models.signals import post_save
from django.template.loader import render_to_string

from apps.monitoring import live as monitoring_live
from tradebaas.redis import redis_client, rkey

from .state import page_state

log = logging.getLogger(__name__)
COALESCE_SECONDS = 0.1
RENDER_PENDING_KEY = "state:live-render-pending"
FRAGMENTS = (
    "web/partials/header_status.html",
    "web/partials/run_controls.html",
    "web/partials/checkpoints.html",
    "web/partials/position_card.html",
    "web/partials/chart_levels.html",
    "web/partials/error_dialog.html",
)


def render_state_fragments(_user=None) -> str:
    """Every live piece of the page as hx-swap-oob fragments."""
    state = page_state()
    parts = []
    for template in FRAGMENTS:
        html = render_to_string(template, {"state": state})
        if template.endswith("header_status.html"):
            html = f'<span id="header-status" hx-swap-oob="true">{html}</span>'
        elif template.endswith("error_dialog.html"):
            # Replace the dialog's content, not the dialog: an open dialog stays open.
            start = html.index('<div id="error-details">')
            html = html[start : html.rindex("</dialog>")].replace(
                '<div id="error-details">', '<div id="error-details" hx-swap-oob="true">', 1
            )
        else:
            html = html.replace(' id="', ' hx-swap-oob="true" id="', 1)
        parts.append(html)
    return "\n".join(parts)


class _Pusher:
    def __init__(self) -> None:
        self.wanted = threading.Event()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def request(self) -> None:
        self.wanted.set()
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="live-push", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while self.wanted.wait(timeout=30):
            self.wanted.clear()
            self.wanted.wait(COALESCE_SECONDS)  # let a burst of saves land first
            self.wanted.clear()
            try:
                request_render()
            except Exception:  # the page is a view; trading goes on
                log.warning("live state render request failed", exc_info=True)


_pusher = _Pusher()


def request_render() -> None:
    """Queue one render on the default worker unless one is already waiting."""
    if redis_client().set(rkey(RENDER_PENDING_KEY), "1", nx=True, ex=5):
        from .tasks import live_state_render

        live_state_render.apply_async(queue="default")


def render_and_push() -> None:
    redis_client().delete(rkey(RENDER_PENDING_KEY))  # changes from now on queue another render
    monitoring_live.live_push(render_state_fragments())


def state_changed(**_kwargs) -> None:
    transaction.on_commit(_pusher.request)


def install() -> None:
    from apps.brokers.models import BrokerAccount
    from apps.orders.models import Bracket, Order, Trade
    from apps.strategies.models import RunTransition, StrategyRun

    # Events are pushed as rows by apps.monitoring.events; checkpoints by the loop itself.
    for model in (StrategyRun, RunTransition, Bracket, Order, Trade, BrokerAccount):
        post_save.connect(state_changed, sender=model, dispatch_uid=f"web-live-{model.__name__}")
    if render_state_fragments not in monitoring_live.INITIAL_STATE_RENDERERS:
        monitoring_live.INITIAL_STATE_RENDERERS.append(render_state_fragments)
