"""Celery tasks of the runner: the loop itself (queue ``runner``) and its supervisor (beat, 10 s)."""

from __future__ import annotations

import logging

from celery import shared_task

log = logging.getLogger("tradebaas.runner")


@shared_task(
    name="apps.strategies.tasks.run_loop",
    acks_late=False,  # acknowledged on receipt: a redelivered loop would be a second loop
    time_limit=None,
    soft_time_limit=None,
    ignore_result=True,
)
def run_loop(run_id: int) -> str:
    """Host the loop of run ``run_id`` until it stops, pauses, errs or loses its lock."""
    from apps.strategies.runner.loop import run_loop_forever

    return run_loop_forever(run_id)


@shared_task(name="apps.strategies.tasks.supervise_runs", ignore_result=True)
def supervise_runs() -> list[int]:
    """Start the loop of an active run whose lock is free (after a crash or a deploy)."""
    from apps.strategies.runner.supervisor import supervise

    return supervise()
