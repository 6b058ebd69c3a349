"""Chaos: 100 brackets against the Deribit simulator over a real socket, a fault at every step.

Each round: the run starts (or is resumed / restarted), the loop reconciles, the first closed
candle gives a signal, and the fault of the round hits the bracket (socket dropped before or
after the linked request, a leg refused, the answer delayed past the timeout), or the requests
around it (pre-flight reads, the lookup by label, the orphan sweep, the reconcile). After every
round, on the exchange: no orphan order, no position without a stop, no bracket entered twice;
and the run waits in ERROR or PAUSED for a human, or (a delayed answer resolved by label) holds
one complete, protected bracket.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from apps.brokers.simulator.testing import deribit_sim_thread
from apps.orders.models import Bracket, BracketState
from apps.strategies import services
from apps.strategies.models import RunState, StrategyRun
from apps.strategies.runner.loop import run_loop_forever
from apps.strategies.tests.runner_kit import make_run
from apps.strategies.tests.sim_kit import (
    SimDriver,
    deribit_gateway,
    entries,
    live_orders,
    orphans,
    position_size,
    sim_options,
    unprotected,
)

pytestmark = [pytest.mark.chaos, pytest.mark.django_db, pytest.mark.usefixtures("fast_loop")]

TIMEOUT = 0.25  # the client's order timeout in these rounds (seconds)
ROUNDS = 100

# name -> (how to inject on the simulator's fault switchboard, the states the run may end in)
WAITING = {RunState.ERROR, RunState.PAUSED}
RESOLVED = {RunState.POSITION_OPEN}


# Scenarios whose fault meets the bracket request itself (the others meet the reads of the
# reconcile or the pre-flight that come before it).
AT_THE_BRACKET = {
    "drop before primary",
    "drop after primary",
    "drop before stop leg",
    "drop after stop leg",
    "drop before take leg",
    "drop after take leg",
    "reject primary",
    "reject stop leg",
    "reject take leg",
    "answer delayed past the timeout",
    "delayed, then the lookup by label dropped",
}


def _scenarios():
    return [
        ("drop before primary", lambda f: f.drop_on_next_order("before", "primary"), WAITING),
        ("drop after primary", lambda f: f.drop_on_next_order("after", "primary"), WAITING),
        ("drop before stop leg", lambda f: f.drop_on_next_order("before", "stop"), WAITING),
        ("drop after stop leg", lambda f: f.drop_on_next_order("after", "stop"), WAITING),
        ("drop before take leg", lambda f: f.drop_on_next_order("before", "take"), WAITING),
        ("drop after take leg", lambda f: f.drop_on_next_order("after", "take"), WAITING),
        ("reject primary", lambda f: f.reject_next_order("primary", 10009), WAITING),
        ("reject stop leg", lambda f: f.reject_next_order("stop", 10032), WAITING),
        ("reject take leg", lambda f: f.reject_next_order("take", 10009), WAITING),
        (
            "answer delayed past the timeout",
            lambda f: f.delay(TIMEOUT * 1000 * 3, ["private/buy", "private/sell"]),
            RESOLVED,
        ),
        (
            "delayed, then the lookup by label dropped",
            lambda f: (
                f.delay(TIMEOUT * 1000 * 3, ["private/buy", "private/sell"]),
                f.drop_on_next_request("private/get_order_state_by_label", "before"),
            ),
            WAITING,
        ),
        (
            "pre-flight position read dropped",
            lambda f: f.drop_on_next_request("private/get_positions", "after", count=2),
            WAITING,
        ),
        (
            "open-orders read dropped",
            lambda f: f.drop_on_next_request("private/get_open_orders", "before"),
            WAITING,
        ),
        (
            "engine maintenance",
            lambda f: f.set_maintenance(True),
            WAITING,
        ),
    ]


def _duplicates(sim) -> list[str]:
    counts = Counter(o.label for o in entries(sim))
    return [label for label, n in counts.items() if n > 1]


def _prepare_round(sim, run: StrategyRun) -> None:
    """Between rounds: a clean fault table; the trader closes what is open by hand; the run is
    resumed or restarted (a human decision, as in production)."""
    sim.reset()

    def flatten():
        engine = sim.engine
        if engine.position("BTC-PERPETUAL").size:
            engine.close_position("BTC-PERPETUAL")
        engine.cancel_all()

    sim.call(flatten)
    run.refresh_from_db()
    if run.state == RunState.ERROR:
        services.run_restart()
    elif run.state == RunState.PAUSED:
        services.run_resume()
    elif run.state != RunState.IDLE:
        StrategyRun.objects.filter(id=run.id).update(state=RunState.IDLE)


@pytest.mark.slow
def test_100_brackets_with_a_fault_at_every_step_leave_nothing_unsafe():
    scenarios = _scenarios()
    outcomes: Counter[str] = Counter()
    with deribit_sim_thread(**sim_options()) as sim:
        run = make_run()
        for round_no in range(ROUNDS):
            name, inject, allowed = scenarios[round_no % len(scenarios)]
            _prepare_round(sim, run)
            brackets_before = Bracket.objects.count()
            inject(sim.faults)
            gateway = deribit_gateway(sim, timeout=TIMEOUT)
            stop = threading.Event()
            with SimDriver(sim, stop, limit=4, interval=0.04, settle=0.5) as driver:
                outcome = run_loop_forever(
                    run.id, gateway_factory=lambda r, g=gateway: g, stop=stop, max_seconds=20
                )
            sim.reset()  # clear faults left unused before looking
            assert driver.error is None, driver.error
            run.refresh_from_db()
            outcomes[f"{name}: {run.state}"] += 1
            where = f"round {round_no} ({name}): run {run.state} [{outcome}] {run.error_message}"
            assert not orphans(sim), f"{where}: orphan orders {orphans(sim)}"
            assert not unprotected(sim), f"{where}: a position without a stop"
            assert not _duplicates(sim), f"{where}: an entry sent twice {_duplicates(sim)}"
            assert run.state in allowed, where
            if name in AT_THE_BRACKET:  # the fault met the bracket itself, not the reconcile
                assert Bracket.objects.count() > brackets_before, where
            if run.state == RunState.POSITION_OPEN and position_size(sim) != 0:
                # one complete, protected set (the position may also have closed on the last
                # candle before the loop stopped: the next reconcile records that trade)
                bracket = Bracket.objects.get(state=BracketState.OPEN)
                labels = {o.label for o in live_orders(sim)}
                assert labels == {f"tb-{bracket.bracket_id}-sl", f"tb-{bracket.bracket_id}-tp"}
    print("\nchaos outcomes:", dict(sorted(outcomes.items())))
    assert sum(outcomes.values()) == ROUNDS
