from __future__ import annotations

from celery import shared_task


@shared_task(name="apps.web.tasks.backtest_job_run")
def backtest_job_run(job_id: int) -> str:
    """A backtest started from the page (on the default queue)."""
    from .backtests import run_job

    return run_job(job_id)


@shared_task(name="apps.web.tasks.live_state_render", ignore_result=True)
def live_state_render() -> None:
    """Render the page's live state once and push it to every open page."""
    from .live import render_and_push

    render_and_push()
