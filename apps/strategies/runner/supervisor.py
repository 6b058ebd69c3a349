"""Start a loop for an active run that should be running but whose lock is free."""

from __future__ import annotations

import logging

from apps.strategies.models import LOOP_STATES, StrategyRun
from apps.strategies.runner.config import runner_setting
from apps.strategies.runner.lock import lock_holder
from tradebaas.redis import redis_client, rkey

log = logging.getLogger("tradebaas.runner")
LAUNCH_KEY = "lock:runner-launch"


def supervise() -> list[int]:
    """Queue ``run_loop`` for the active run if no loop holds the lock. Returns the run ids queued.

    A short launch marker keeps two supervisor ticks (or two beat instances) from queueing two
    loops for one vacancy; even if they did, the second loop finds the lock taken and exits.
    """
    run = StrategyRun.objects.filter(is_active=True, state__in=LOOP_STATES).first()
    if run is None or lock_holder() is not None:
        return []
    ttl_ms = int(runner_setting("RUNNER_LAUNCH_TTL_MS"))
    if not redis_client().set(rkey(LAUNCH_KEY), str(run.id), nx=True, px=ttl_ms):
        return []
    from apps.strategies.services import launch_loop

    log.info("supervisor: run %s has no loop; launching one", run.id)
    launch_loop(run.id)
    return [run.id]
