"""The supervisor restarts the loop of an active run whose lock is free, once per vacancy."""

from __future__ import annotations

import pytest

from apps.strategies.models import RunState
from apps.strategies.runner.lock import RunnerLock, lock_holder
from apps.strategies.runner.supervisor import supervise
from apps.strategies.tasks import supervise_runs
from apps.strategies.tests.runner_kit import make_run
from tradebaas.redis import redis_client, rkey

pytestmark = pytest.mark.django_db


def queued_loops() -> int:
    return redis_client().llen(rkey("runner"))


def test_no_active_run_launches_nothing():
    assert supervise() == []


def test_a_vacant_active_run_gets_exactly_one_loop_per_vacancy():
    run = make_run(state=RunState.POSITION_OPEN)
    before = queued_loops()
    assert supervise_runs() == [run.id]
    assert queued_loops() == before + 1
    assert supervise() == []  # the launch marker holds a second tick back
    assert queued_loops() == before + 1


def test_a_held_lock_means_no_launch():
    run = make_run(state=RunState.ANALYZING)
    lock = RunnerLock(run.id)
    assert lock.acquire()
    assert lock_holder() == lock.token
    assert supervise() == []
    lock.release()
    assert lock_holder() is None


@pytest.mark.parametrize("state", [RunState.PAUSED, RunState.ERROR])
def test_paused_or_failed_runs_wait_for_a_human(state):
    make_run(state=state)
    assert supervise() == []


def test_fencing_numbers_only_grow_and_renew_needs_the_token():
    from apps.strategies.runner.lock import LockLost

    first = RunnerLock(1, ttl_ms=2000)
    assert first.acquire()
    first.release()
    second = RunnerLock(1, ttl_ms=2000)
    assert second.acquire()
    assert second.fence > first.fence
    with pytest.raises(LockLost):
        first.renew()  # an old loop cannot extend its successor's lock
    second.renew()
    second.check()
    first.release()  # an old loop cannot delete its successor's lock either
    assert lock_holder() == second.token
    second.release()
