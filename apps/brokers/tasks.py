"""Broker tasks. At start-up (beat starting: once per deployment) the active account's stored
state is checked against the broker: a remembered "connected" is tested again."""

from __future__ import annotations

import logging

from celery import shared_task, signals

log = logging.getLogger(__name__)


@shared_task(name="apps.brokers.tasks.broker_reconcile")
def broker_reconcile() -> str:
    from apps.brokers.services import broker_accounts_reconcile

    account = broker_accounts_reconcile()
    state = account.state if account else "paper"
    log.info("broker account reconciled at start-up: %s", state)
    return state


@signals.beat_init.connect
def _reconcile_when_beat_starts(**_kwargs) -> None:
    broker_reconcile.apply_async(queue="default")
