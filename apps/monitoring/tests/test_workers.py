"""A real Celery worker process against the real Redis runs our tasks and reports its heartbeat."""

from __future__ import annotations

import pytest
from celery import exceptions as celery_exceptions

from apps.monitoring.health import heartbeats
from apps.monitoring.tasks import ping
from tradebaas.testing import celery_argv, child_env, running_process, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_real_worker_runs_a_task_and_beats(tmp_path):
    with running_process(
        celery_argv("default", "t-default"), child_env(), tmp_path / "worker.log"
    ) as proc:
        result = ping.apply_async(args=["hello"], queue="default").get(timeout=60)
        assert result["value"] == "hello"
        assert result["pid"] != proc.pid or result["pid"] > 0
        ages = wait_for(
            lambda: {k: v for k, v in heartbeats().items() if k.startswith("worker:default")},
            timeout=20,
            what="worker heartbeat",
        )
        assert min(ages.values()) < 20


def test_runner_queue_is_served_only_by_the_runner_worker(tmp_path):
    """A task sent to the runner queue must never be picked up by the default worker."""
    with running_process(
        celery_argv("default", "t-default2"), child_env(), tmp_path / "default.log"
    ):
        pending = ping.apply_async(args=["runner-only"], queue="runner")
        with pytest.raises(celery_exceptions.TimeoutError):
            pending.get(timeout=5)
        with running_process(
            celery_argv("runner", "t-runner"), child_env(), tmp_path / "runner.log"
        ):
            assert pending.get(timeout=60)["value"] == "runner-only"
