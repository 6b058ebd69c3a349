"""The control version (apps/strategies/control.py): every change to a run or to the risk
settings that the loop did not make moves it once committed, and the fire that checks the lock
refuses, firing nothing, when it moved since the decision's reads. So the close needs no
database read, and a Stop or new settings are never overtaken by a decision made before them."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection, transaction

from apps.orders.armed import ARMED, bracket_arm, mark_key
from apps.orders.gateway import BrokerGateway
from apps.orders.models import Bracket, BracketState
from apps.risk.services import risk_settings_update
from apps.strategies.control import control_key, control_version
from apps.strategies.models import RunState, StrategyRun
from apps.strategies.runner.lock import ControlChanged, RunnerLock
from apps.strategies.runner.loop import Loop
from apps.strategies.services import run_pause, run_stop, run_transition
from apps.strategies.tests.runner_kit import make_run, paper_gateway, run_driven
from tradebaas.redis import redis_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_loop")]


def test_changes_from_outside_the_loop_move_the_version_once_committed():
    start = control_version()
    with transaction.atomic():
        risk_settings_update(mode="fixed", value=Decimal("25"))
        assert control_version() == start  # not before the commit: the loop would read old rows
    after_settings = control_version()
    assert after_settings > start
    run = make_run()
    after_start = control_version()
    assert after_start > after_settings
    run_pause()
    after_pause = control_version()
    assert after_pause > after_start
    # the loop's own fenced moves do not (it knows them)
    StrategyRun.objects.filter(id=run.id).update(state=RunState.ANALYZING, fence=7)
    before = control_version()
    assert run_transition(
        run_id=run.id, to=RunState.SIGNAL_DETECTED, reason="signal", fence=7,
        expected=(RunState.ANALYZING,),
    )  # fmt: skip
    assert control_version() == before
    run_stop()
    assert control_version() > before


def test_the_fire_refuses_when_the_version_moved_and_fires_nothing():
    lock = RunnerLock(run_id=1)
    assert lock.acquire()
    try:
        intent = bracket_arm(
            broker="paper", instrument="BTC-PERPETUAL", run_id=None, account_id=None
        )
        seen = control_version()
        redis_client().incr(control_key())  # a change committed after the decision's reads
        with pytest.raises(ControlChanged):
            lock.fire(intent.key, 1, control=seen)
        assert redis_client().get(mark_key(intent.bracket_id)).decode() == ARMED  # not fired
        assert lock.fire(intent.key, 2, control=control_version()) is True
        assert redis_client().get(mark_key(intent.bracket_id)).decode() == "fired:2"
    finally:
        lock.release()


@pytest.fixture
def ready(monkeypatch):
    """Set once the loop holds a gathered context and an armed intent (the fast path)."""
    event = threading.Event()
    original = Loop._pass

    def spy(self) -> None:
        original(self)
        if self.ready is not None and self.armed is not None:
            event.set()

    monkeypatch.setattr(Loop, "_pass", spy)
    return event


def test_the_close_reads_nothing_from_the_database_when_nothing_changed(ready, monkeypatch):
    """Between the candle and the request: no query (the context was gathered while waiting, the
    intent armed ahead, the run and the settings covered by the version the fire checks)."""
    queries: list[str] = []
    sent: list[list[str]] = []
    closing = threading.local()

    def record(execute, sql, params, many, context):
        if getattr(closing, "on", False):
            queries.append(sql)
        return execute(sql, params, many, context)

    analyze, place = Loop._analyze, BrokerGateway.place_bracket

    def analyze_spy(self, received):
        closing.on = True
        queries.clear()
        try:
            with connection.execute_wrapper(record):
                return analyze(self, received)
        finally:
            closing.on = False

    def place_spy(self, request):
        sent.append(list(queries))
        closing.on = False
        return place(self, request)

    monkeypatch.setattr(Loop, "_analyze", analyze_spy)
    monkeypatch.setattr(BrokerGateway, "place_bracket", place_spy)
    gateway = paper_gateway()
    run_driven(gateway, lambda: ready.wait(10))
    assert sent == [[]], sent
    bracket = Bracket.objects.exclude(state=BracketState.ARMED).get()
    assert bracket.state == BracketState.OPEN
    gateway.close()


def test_a_stop_after_the_context_was_gathered_is_never_overtaken(ready, monkeypatch):
    """The trader presses Stop while the loop waits with everything gathered: the fire refuses
    (the version moved), the loop reads the run again and leaves; nothing is sent."""
    refused = []
    fired = RunnerLock._fired  # the answer of a fire, sent ahead (fire_ahead) or not (fire)

    def fired_spy(self, result: int) -> bool:
        try:
            return fired(self, result)
        except ControlChanged:
            refused.append(result)
            raise

    monkeypatch.setattr(RunnerLock, "_fired", fired_spy)
    keepalive = Loop._keepalive

    def no_heartbeat(self) -> None:  # its own read of the run would also see the Stop
        self.next_heartbeat = float("inf")
        keepalive(self)

    monkeypatch.setattr(Loop, "_keepalive", no_heartbeat)
    gateway = paper_gateway()

    def stop_when_ready() -> None:
        assert ready.wait(10), "the loop never got ready"
        run_stop()
        connection.close()  # this is the driver's thread

    outcome = run_driven(gateway, stop_when_ready, until=lambda engine: False, limit=3)
    assert refused, "the close never tried to fire"
    assert outcome == "stopped"
    assert not any(t.label.endswith("-entry") for t in gateway.broker.engine.trades())
    assert not Bracket.objects.exists()  # the armed intent was disarmed on the way out
    gateway.close()
