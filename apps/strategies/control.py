"""The control version: a Redis counter moved on by every change to a run or to the risk
settings that the loop itself did not make, once that change is committed.

The loop reads it BEFORE it reads the run and the settings for its next decision (while it
waits for the candle, runner/entry.py). At the close, the script that checks the runner lock
and fires the armed intent (``RunnerLock.fire``) also compares the counter with the value read
then: if anything moved it since (a Stop, a Pause, new risk settings), nothing is fired and the
loop reads the database again before it decides. So the close costs no database read, and a
Stop or a settings change the trader has seen saved (the counter moves before the answer goes
back) is never overtaken by an order decided on what was read before it.

What moves it: ``run_transition`` calls that are not the loop's own fenced moves,
``run_stop``, and any ``save``/``delete`` of a run or of the risk settings (the admin, the API,
the page and Telegram all write through those). A change written around the ORM (raw SQL, a
queryset ``update`` elsewhere) does not: the loop then sees it at its next database read (at
the latest when its gathered context expires, ``entry.MAX_AGE_S``).
"""

from __future__ import annotations

import logging

from django.db import transaction

from tradebaas.redis import redis_client, rkey

log = logging.getLogger("tradebaas.runner")

CONTROL_KEY = "state:control"


def control_key() -> str:
    return rkey(CONTROL_KEY)


def control_version() -> int:
    """The counter now (0 when it was never moved, or Redis lost it)."""
    value = redis_client().get(control_key())
    return int(value) if value else 0


def control_changed() -> None:
    """A run or the risk settings changed: move the counter once the change is committed."""
    transaction.on_commit(_bump)


def _bump() -> None:
    try:
        redis_client().incr(control_key())
    except Exception:  # Redis down: the lock check fails too, so no order goes out meanwhile
        log.error("control version not moved: the runner may decide on what it read before")


def on_saved_or_deleted(sender, **kwargs) -> None:
    """post_save / post_delete receiver for StrategyRun and RiskSettings."""
    control_changed()


def connect_signals() -> None:
    from django.db.models.signals import post_delete, post_save

    from apps.risk.models import RiskSettings
    from apps.strategies.models import StrategyRun

    for model in (StrategyRun, RiskSettings):
        for signal in (post_save, post_delete):
            signal.connect(
                on_saved_or_deleted, sender=model, dispatch_uid=f"control-{model.__name__}"
            )
