"""Intents armed ahead (apps/orders/armed.py): written before the close, fired once by the holder
of the runner lock, filled in after the answer, and settled by the reconcile after a crash
according to their mark (never sent: deleted; sent: looked up by label)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from apps.orders.armed import (
    ARMED,
    armed_claim,
    bracket_arm,
    bracket_disarm,
    mark_key,
)
from apps.orders.brackets import BracketRefused, IntentCondition, bracket_place
from apps.orders.gateway import BrokerGateway
from apps.orders.models import Bracket, BracketState, Order, OrderRole, OrderStatus
from apps.orders.reconcile import reconcile
from apps.orders.tests.faulty import FaultyPaperBroker
from apps.orders.tests.test_brackets import INSTRUMENT, plan_for
from apps.strategies.control import control_key, control_version
from apps.strategies.models import RunState, RunTransition, StrategyRun
from apps.strategies.runner.lock import LOCK_NAME, ControlChanged, LockLost, RunnerLock
from apps.strategies.services import Step, run_path
from tradebaas.redis import redis_client, rkey

pytestmark = pytest.mark.django_db


@pytest.fixture
def gateway():
    made = BrokerGateway(FaultyPaperBroker(linked=True, warmup=5))
    made.connect()
    yield made
    made.close()


@pytest.fixture
def lock():
    held = RunnerLock(run_id=1)
    assert held.acquire()
    yield held
    held.release()


def arm(gateway: BrokerGateway, run_id: int | None = None):
    return bracket_arm(
        broker=gateway.broker_id, instrument=INSTRUMENT, run_id=run_id, account_id=None
    )


def armed_plan(gateway, intent):
    return dataclasses.replace(plan_for(gateway), bracket_id=intent.bracket_id)


def now_ms() -> int:
    return int(time.time() * 1000)


def mark(intent) -> str | None:
    value = redis_client().get(mark_key(intent.bracket_id))
    return value.decode() if value else None


def _reconcile(gateway):
    return reconcile(gateway, instrument=INSTRUMENT, run_id=None, account_id=None)


def test_an_armed_intent_holds_the_labels_and_nothing_else(gateway):
    intent = arm(gateway)
    bracket = Bracket.objects.get(bracket_id=intent.bracket_id)
    assert bracket.state == BracketState.ARMED
    labels = sorted(Order.objects.filter(bracket=bracket).values_list("label", flat=True))
    assert labels == sorted(f"tb-{intent.bracket_id}-{suffix}" for suffix in ("entry", "sl", "tp"))
    assert mark(intent) == ARMED


def test_firing_needs_the_lock_and_works_once(gateway, lock):
    intent = arm(gateway)
    assert lock.fire(intent.key, now_ms()) is True
    assert mark(intent).startswith("fired:")
    assert lock.fire(intent.key, now_ms()) is False  # one intent, one request


def test_a_loop_that_lost_the_lock_fires_nothing(gateway, lock):
    intent = arm(gateway)
    other = RunnerLock(run_id=1, fence=lock.fence + 1)
    other._renewed_at = lock._renewed_at
    with pytest.raises(LockLost):
        other.fire(intent.key, now_ms())
    assert mark(intent) == ARMED


def test_a_fire_sent_ahead_fires_once_when_taken(gateway, lock):
    intent = arm(gateway)
    at = now_ms()
    ahead = lock.fire_ahead(intent.key, at, control=control_version())
    assert ahead.serves(intent.key, control_version())
    assert ahead.take() is True
    assert mark(intent) == f"fired:{at}"
    assert not ahead.serves(intent.key, control_version())
    ahead.settle()  # taken: nothing to settle
    assert mark(intent) == f"fired:{at}"
    assert lock.fire(intent.key, now_ms()) is False


def test_a_fire_sent_ahead_and_not_used_arms_the_intent_again(gateway, lock):
    intent = arm(gateway)
    lock.fire_ahead(intent.key, now_ms(), control=control_version()).settle()
    assert mark(intent) == ARMED
    assert lock.fire(intent.key, now_ms()) is True  # still good for the next close


def test_a_fire_sent_ahead_is_refused_after_a_control_change(gateway, lock):
    intent = arm(gateway)
    seen = control_version()  # the decision's reads were made under this version
    redis_client().incr(control_key())  # a Stop or a settings change, before the candle
    ahead = lock.fire_ahead(intent.key, now_ms(), control=seen)
    with pytest.raises(ControlChanged):
        ahead.take()
    assert mark(intent) == ARMED


def test_a_fire_sent_ahead_without_the_lock_fires_nothing(gateway, lock):
    intent = arm(gateway)
    other = RunnerLock(run_id=1, fence=lock.fence + 1)
    other._renewed_at = lock._renewed_at
    ahead = other.fire_ahead(intent.key, now_ms(), control=control_version())
    with pytest.raises(LockLost):
        ahead.take()
    assert mark(intent) == ARMED


def test_a_fire_sent_ahead_is_not_undone_once_the_lock_is_lost(gateway, lock):
    """The unfire needs the lock: a successor's reconcile settles the intent as fired (its
    labels looked up, nothing found), never one a successor could be about to use."""
    intent = arm(gateway)
    at = now_ms()
    ahead = lock.fire_ahead(intent.key, at, control=control_version())
    redis_client().set(rkey(LOCK_NAME), "someone-else")
    ahead.settle()
    assert mark(intent) == f"fired:{at}"


def test_a_fire_sent_ahead_after_redis_lost_its_scripts_fires_the_usual_way(gateway, lock):
    intent = arm(gateway)
    redis_client().script_flush()
    at = now_ms()
    ahead = lock.fire_ahead(intent.key, at, control=control_version())
    assert ahead.take() is True  # NOSCRIPT: nothing ran; fired by the script loaded again
    assert mark(intent) == f"fired:{at}"


def test_disarm_deletes_an_intent_never_fired_and_keeps_a_fired_one(gateway, lock):
    unused = arm(gateway)
    assert bracket_disarm(unused) is True
    assert not Bracket.objects.filter(bracket_id=unused.bracket_id).exists()
    assert mark(unused) is None
    fired = arm(gateway)
    lock.fire(fired.key, now_ms())
    assert bracket_disarm(fired) is False
    assert Bracket.objects.get(bracket_id=fired.bracket_id).state == BracketState.ARMED


def test_a_bracket_sent_with_an_armed_intent_is_recorded_with_its_plan(gateway, lock):
    intent = arm(gateway)
    plan = armed_plan(gateway, intent)
    bracket = bracket_place(gateway=gateway, plan=plan, armed=intent, fire=lock.fire)
    bracket.refresh_from_db()
    assert bracket.bracket_id == intent.bracket_id
    assert bracket.state == BracketState.OPEN
    assert (bracket.side, bracket.amount, bracket.stop_price) == (
        "buy",
        plan.amount,
        plan.stop_price,
    )
    rows = {o.role: o for o in bracket.orders.all()}
    assert rows[OrderRole.STOP_LOSS].trigger_price == plan.stop_price
    assert rows[OrderRole.TAKE_PROFIT].price == plan.take_profit_price
    assert all(row.exchange_id for row in rows.values())
    assert rows[OrderRole.ENTRY].status == OrderStatus.FILLED
    assert gateway.broker.engine.position(INSTRUMENT).size == plan.amount


def _run_path(run: StrategyRun):
    return run_path(
        run_id=run.id,
        start=RunState.ANALYZING,
        steps=[
            Step(RunState.SIGNAL_DETECTED, "signal"),
            Step(RunState.ENTERING_POSITION, "placing"),
        ],
        fence=run.fence,
    )


def test_the_runs_moves_are_written_with_the_answer_when_the_run_is_still_its_loops(gateway, lock):
    run = StrategyRun.objects.create(
        strategy="fast_test", instrument=INSTRUMENT, state=RunState.ANALYZING, fence=lock.fence
    )
    intent = arm(gateway, run.id)
    path = _run_path(run)
    condition = IntentCondition(lambda: path)
    bracket_place(
        gateway=gateway,
        plan=armed_plan(gateway, intent),
        armed=intent,
        fire=lock.fire,
        condition=condition,
    )
    assert condition.held is True
    run.refresh_from_db()
    assert run.state == RunState.ENTERING_POSITION
    assert RunTransition.objects.filter(run_id=run.id).count() == 2


def test_a_run_stopped_while_the_request_was_out_gets_no_moves_but_the_bracket_is_recorded(
    gateway, lock
):
    run = StrategyRun.objects.create(
        strategy="fast_test", instrument=INSTRUMENT, state=RunState.ANALYZING, fence=lock.fence
    )
    intent = arm(gateway, run.id)
    path = _run_path(run)
    condition = IntentCondition(lambda: path)
    place = gateway.place_bracket

    def stopped_meanwhile(request):
        answer = place(request)
        StrategyRun.objects.filter(id=run.id).update(is_active=False, state=RunState.IDLE)
        return answer

    gateway.place_bracket = stopped_meanwhile
    bracket = bracket_place(
        gateway=gateway,
        plan=armed_plan(gateway, intent),
        armed=intent,
        fire=lock.fire,
        condition=condition,
    )
    assert condition.held is False
    assert Bracket.objects.get(pk=bracket.pk).state == BracketState.OPEN
    assert not RunTransition.objects.filter(run_id=run.id).exists()
    assert StrategyRun.objects.get(id=run.id).state == RunState.IDLE


def test_a_refused_bracket_sent_with_an_armed_intent_is_recorded_failed(gateway, lock):
    intent = arm(gateway)
    plan = dataclasses.replace(armed_plan(gateway, intent), amount=plan_for(gateway).amount * 10**9)
    with pytest.raises(BracketRefused):
        bracket_place(gateway=gateway, plan=plan, armed=intent, fire=lock.fire)
    bracket = Bracket.objects.get(bracket_id=intent.bracket_id)
    assert bracket.state == BracketState.FAILED
    assert bracket.amount == plan.amount
    assert set(bracket.orders.values_list("status", flat=True)) == {OrderStatus.NOT_PLACED}


def test_an_intent_whose_mark_was_lost_is_written_again_before_sending(gateway, lock):
    intent = arm(gateway)
    redis_client().delete(mark_key(intent.bracket_id))  # Redis lost its data
    bracket = bracket_place(
        gateway=gateway, plan=armed_plan(gateway, intent), armed=intent, fire=lock.fire
    )
    assert Bracket.objects.get(pk=bracket.pk).state == BracketState.OPEN
    assert Bracket.objects.filter(bracket_id=intent.bracket_id).count() == 1


def test_reconcile_deletes_an_intent_that_was_never_sent(gateway):
    intent = arm(gateway)
    report = _reconcile(gateway)
    assert not Bracket.objects.filter(bracket_id=intent.bracket_id).exists()
    assert report.resolved == []
    assert mark(intent) is None


def test_reconcile_adopts_a_bracket_fired_and_placed_by_a_loop_that_crashed(gateway, lock):
    intent = arm(gateway)
    plan = armed_plan(gateway, intent)
    assert lock.fire(intent.key, now_ms())
    gateway.place_bracket(plan.request())  # ... and the process died before writing the answer
    report = _reconcile(gateway)
    bracket = Bracket.objects.get(bracket_id=intent.bracket_id)
    assert bracket.state == BracketState.OPEN
    assert report.open_bracket == bracket
    assert report.resolved[0] == f"{intent.bracket_id}:sent"
    assert (bracket.side, bracket.amount, bracket.stop_price) == (
        "buy",
        plan.amount,
        plan.stop_price,
    )
    rows = {o.role: o for o in bracket.orders.all()}
    assert rows[OrderRole.STOP_LOSS].exchange_id
    assert mark(intent) is None


def test_reconcile_fails_an_intent_fired_that_never_reached_the_exchange(gateway, lock):
    intent = arm(gateway)
    assert lock.fire(intent.key, now_ms())  # the process died before the request left
    report = _reconcile(gateway)
    bracket = Bracket.objects.get(bracket_id=intent.bracket_id)
    assert bracket.state == BracketState.FAILED
    assert report.resolved == [f"{intent.bracket_id}:not_placed"]
    assert gateway.broker.engine.position(INSTRUMENT).size == 0


def test_reconcile_treats_an_intent_without_its_mark_as_sent(gateway):
    intent = arm(gateway)
    plan = armed_plan(gateway, intent)
    gateway.place_bracket(plan.request())
    redis_client().delete(mark_key(intent.bracket_id))
    assert armed_claim(intent.bracket_id) == ""
    _reconcile(gateway)
    assert Bracket.objects.get(bracket_id=intent.bracket_id).state == BracketState.OPEN


def test_reconcile_leaves_an_answer_written_meanwhile_by_the_loop_that_sent_it(
    gateway, lock, monkeypatch
):
    """A loop that lost its lock with its request out still writes the answer when it comes;
    the reconcile of its successor, which waited for that request, must not overwrite it."""
    from apps.orders import reconcile as reconciling

    intent = arm(gateway)
    plan = armed_plan(gateway, intent)
    assert lock.fire(intent.key, now_ms())
    gateway.place_bracket(plan.request())
    lookup = reconciling._armed_lookup

    def answer_written_meanwhile(gateway, bracket, sent_ms, keepalive=None):
        found = lookup(gateway, bracket, sent_ms, keepalive)
        Bracket.objects.filter(pk=bracket.pk).update(  # as _materialize writes it
            state=BracketState.PLACING,
            side=str(plan.side),
            amount=plan.amount,
            stop_price=plan.stop_price,
            take_profit_price=plan.take_profit_price,
            risk_settings={"mode": "percent", "value": "1"},
        )
        return found

    monkeypatch.setattr(reconciling, "_armed_lookup", answer_written_meanwhile)
    report = _reconcile(gateway)
    assert report.resolved[0] == f"{intent.bracket_id}:recorded_by_its_loop"
    bracket = Bracket.objects.get(bracket_id=intent.bracket_id)
    assert bracket.risk_settings == {"mode": "percent", "value": "1"}  # the loop's, kept
    assert bracket.state == BracketState.OPEN  # then settled as any bracket in flight


def test_the_reconcile_waits_out_a_fired_request_renewing_the_lock(gateway, lock):
    """A fired intent is looked up only once its request expired (fire time + the order
    timeout), and the loop's lock is renewed meanwhile (the wait may outlast its TTL)."""
    from apps.orders import reconcile as reconciling

    gateway.broker.order_timeout = 0.6
    intent = arm(gateway)
    fired = now_ms()
    assert lock.fire(intent.key, fired)
    renewals: list[float] = []
    started = time.time()
    found = reconciling._armed_lookup(
        gateway, intent.bracket, fired, keepalive=lambda: renewals.append(time.time())
    )
    assert time.time() >= fired / 1000 + 0.6 + reconciling.ARMED_GRACE_S
    assert len(renewals) >= 3 and renewals[0] - started < 0.05
    assert found == {OrderRole.ENTRY: [], OrderRole.STOP_LOSS: [], OrderRole.TAKE_PROFIT: []}


def test_a_request_sent_with_a_fired_intent_expires_counting_from_the_fire():
    from apps.brokers.deribit.broker import DeribitBroker

    broker = DeribitBroker("id", "secret", order_timeout=10)
    params: dict = {}
    broker._stamp_valid_until(params, "abc", since_ms=now_ms() - 3000)
    assert abs(params["valid_until"] - (now_ms() + 7000)) < 200
    broker._stamp_valid_until(params, "abd")
    assert abs(params["valid_until"] - (now_ms() + 10000)) < 200
