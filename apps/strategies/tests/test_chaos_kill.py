"""Chaos with real processes: kill -9 of the runner worker in the middle of trades, and two
workers facing 100 parallel starts.

The Deribit simulator runs in a thread of the test process, so it survives every kill; the
loop runs in a real Celery worker (queue ``runner``) started through ``tradebaas.testing``,
with the real DeribitClient over a real socket. A market thread walks candles through the
simulator the whole time. The supervisor (the beat task's function) is called by the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from collections import Counter

import psutil
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from apps.brokers.models import BrokerAccount
from apps.brokers.simulator.testing import deribit_sim_thread
from apps.orders.models import Bracket, BracketState, Trade
from apps.strategies.models import RunState, StrategyRun
from apps.strategies.runner.lock import lock_holder
from apps.strategies.runner.loop import LOOP_KEY
from apps.strategies.runner.supervisor import supervise
from apps.strategies.tests.runner_kit import start_concurrently
from apps.strategies.tests.sim_kit import entries, orphans, sim_options, step, unprotected
from tradebaas.redis import redis_client, rkey
from tradebaas.testing import celery_argv, child_env, running_process, wait_for

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("real worker processes and 100 concurrent writers need PostgreSQL")


KILLS = 50
WHOLE_WORKER_KILLS = {17, 34}  # these cycles kill the worker's main process too (and restart it)
LOCK_TTL_MS = 1500


def _env(sim) -> dict[str, str]:
    return child_env(
        TRADEBAAS_DERIBIT_URL=sim.ws_url,
        TRADEBAAS_RUNNER_LOCK_TTL_MS=str(LOCK_TTL_MS),
        TRADEBAAS_RUNNER_LAUNCH_TTL_MS="800",
        TRADEBAAS_RUNNER_CANDLE_WAIT_S="0.05",
        TRADEBAAS_RUNNER_POSITION_POLL_S="0.1",
        LOG_LEVEL="INFO",
        LOG_FORMAT="text",
    )


def _account(sim) -> BrokerAccount:
    account = BrokerAccount(broker="deribit", testnet=True, state="connected", is_active=True)
    account.set_credentials(api_key=sim.client_id, api_secret=sim.client_secret)
    account.save()
    return account


def _loop_info() -> dict | None:
    raw = redis_client().get(rkey(LOOP_KEY))
    return json.loads(raw) if raw else None


class Market(threading.Thread):
    """Closes a candle every ``interval`` seconds until stopped."""

    def __init__(self, sim, interval: float = 0.08) -> None:
        super().__init__(daemon=True)
        self.sim = sim
        self.interval = interval
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            step(self.sim)


def _live_loop(run_id: int, after_fence: int, timeout: float = 40) -> dict:
    """Wait until a loop newer than ``after_fence`` holds the lock and has reconciled."""

    def ready():
        supervise()  # what beat does every 10 s
        info = _loop_info()
        if not info or info["fence"] <= after_fence or lock_holder() is None:
            return None
        row = StrategyRun.objects.filter(id=run_id).values("state", "fence").first()
        if row["fence"] != info["fence"]:
            return None
        if row["state"] in (RunState.ANALYZING, RunState.POSITION_OPEN):
            return info
        assert row["state"] not in (RunState.ERROR, RunState.PAUSED), row
        return None

    return wait_for(ready, timeout=timeout, interval=0.05, what="a new loop")


def _kill_pool_child(info: dict) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have ended on its own just now
        os.kill(info["pid"], signal.SIGKILL)


def test_50_kill_9_cycles_lose_no_trade_and_leave_every_position_protected(tmp_path):
    rng = random.Random(7)
    with deribit_sim_thread(**sim_options()) as sim:
        account = _account(sim)
        run = StrategyRun.objects.create(
            strategy="fast_test",
            params={"first_side": "buy", "stop_loss_pct": 0.3, "take_profit_pct": 0.3},
            instrument="BTC-PERPETUAL",
            broker_account_id=account.id,
        )
        env = _env(sim)
        market = Market(sim)
        worker = running_process(celery_argv("runner", "t-runner"), env, tmp_path / "worker-0.log")
        proc = worker.__enter__()
        market.start()
        kills: Counter[str] = Counter()
        try:
            fence = 0
            for cycle in range(KILLS):
                info = _live_loop(run.id, fence)
                fence = info["fence"]
                # mid-trade: wait for an open position half of the time, then a random moment
                if cycle % 2 == 0:
                    wait_for(
                        lambda: StrategyRun.objects.filter(
                            id=run.id, state=RunState.POSITION_OPEN
                        ).exists(),
                        timeout=20,
                        interval=0.02,
                        what="a position",
                    )
                time.sleep(rng.uniform(0, 0.3))
                if cycle in WHOLE_WORKER_KILLS:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
                    worker.__exit__(None, None, None)
                    worker = running_process(
                        celery_argv("runner", "t-runner"), env, tmp_path / f"worker-{cycle}.log"
                    )
                    proc = worker.__enter__()
                    kills["whole worker"] += 1
                else:
                    _kill_pool_child(info)
                    kills["loop process"] += 1
                # the dead loop's position is protected by the exchange-side legs
                assert not unprotected(sim), f"cycle {cycle}: a position without a stop"
            # last: a live loop reconciles what happened during the last kill
            _live_loop(run.id, fence)
            market.halt.set()
            market.join(timeout=5)
            time.sleep(1.0)  # let the loop record a trade that closed on the last candle
        finally:
            market.halt.set()
            worker.__exit__(None, None, None)
        assert sum(kills.values()) == KILLS
        # stop the run; one more reconcile in-process makes sure everything closed is recorded
        from apps.strategies.services import run_stop

        run.refresh_from_db()
        assert run.state in (RunState.ANALYZING, RunState.POSITION_OPEN), run.error_message
        run_stop()
        # every round trip on the exchange is a trade in our history
        fills = sim.call(lambda: sim.engine.trades())
        entered = {f.label[3:-6] for f in fills if f.label.endswith("-entry")}
        open_ids = set(
            Bracket.objects.filter(state=BracketState.OPEN).values_list("bracket_id", flat=True)
        )
        recorded = set(Trade.objects.values_list("bracket__bracket_id", flat=True))
        missing = entered - recorded - open_ids
        assert not missing, f"trades lost from history: {missing}"
        assert len(open_ids) <= 1
        assert not orphans(sim)
        assert not unprotected(sim)
        counts = Counter(o.label for o in entries(sim))
        assert all(n == 1 for n in counts.values()), "an entry was sent twice"
        assert len(recorded) >= 5, "the loop traded between the kills"
        print(f"\nkill -9: {dict(kills)}; trades recorded {len(recorded)}; open {len(open_ids)}")


def test_two_workers_and_100_parallel_starts_give_one_loop(tmp_path, user, settings):
    from apps.brokers.services import instrument_specs

    token, _ = Token.objects.get_or_create(user=user)
    with deribit_sim_thread(**sim_options()) as sim:
        _account(sim)
        settings.TRADEBAAS_DERIBIT_URL = sim.ws_url
        assert instrument_specs()  # read once from the simulator, then cached
        env = _env(sim)
        with (
            running_process(celery_argv("runner", "t-a"), env, tmp_path / "a.log"),
            running_process(celery_argv("runner", "t-b"), env, tmp_path / "b.log"),
        ):
            statuses = start_concurrently(token.key, 100)
            assert statuses.count(201) == 1 and statuses.count(409) == 99
            run = StrategyRun.objects.get()
            # more launches than loops: the supervisor and extra queued tasks race for the lock
            from apps.strategies.services import launch_loop

            for _ in range(4):
                launch_loop(run.id)
            holders: set[str] = set()
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                supervise()
                holder = lock_holder()
                if holder:
                    holders.add(holder)
                time.sleep(0.05)
            assert len(holders) == 1, holders
            reconciled = run.transitions.filter(reason="reconciled").count()
            assert reconciled == 1, "a second loop started"
            # both workers took loop tasks; the later ones found the lock held and returned
            logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
            assert logs.count("another loop holds the runner lock") >= 1
            pids = {p.pid for p in psutil.process_iter() if "t-a@" in " ".join(p.cmdline() or [])}
            assert pids, "worker a is alive"
