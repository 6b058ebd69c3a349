"""Beat task: every 60 s, find orphan orders by label and cancel them (and say so in the events)."""

from __future__ import annotations

import logging

from celery import shared_task

log = logging.getLogger("tradebaas.orphans")


@shared_task(name="apps.orders.tasks.orphan_sweep", ignore_result=True)
def orphan_sweep() -> dict:
    """While a loop runs it sweeps with its own connection (a paper account lives inside the
    loop's process), so the task only asks it to; with no loop, the task connects and sweeps."""
    from apps.brokers.selectors import active_account
    from apps.brokers.services import broker_build
    from apps.orders.gateway import BrokerGateway
    from apps.orders.orphans import orphan_sweep_once
    from apps.strategies.runner.lock import lock_holder
    from apps.strategies.runner.loop import SWEEP_REQUEST_KEY
    from tradebaas.redis import redis_client, rkey

    if lock_holder() is not None:
        redis_client().set(rkey(SWEEP_REQUEST_KEY), "1", ex=120)
        return {"delegated": True}
    account = active_account()
    if account is None:
        return {"skipped": "no broker account (paper lives in the loop's process)"}
    gateway = BrokerGateway(broker_build(account=account), timeout=30)
    try:
        gateway.connect()
        result = orphan_sweep_once(gateway)
    finally:
        gateway.close()
    log.info("orphan sweep: %s", result)
    return result


@shared_task(name="apps.orders.tasks.manual_command")
def manual_command(command: dict) -> dict:
    """A kill switch / close-position when no loop holds the broker (see apps.orders.manual)."""
    from apps.orders.manual import execute_here

    return execute_here(command)
