from __future__ import annotations

from celery import shared_task


@shared_task(name="apps.web.tasks.backtest_job_run")
def backtest_job_run(job_id: int) -> str:
    """A backtest started from the page (on the default queue)."""
    from .backtests import run_job

    return run_job(job_id)
