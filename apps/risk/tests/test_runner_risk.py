"""Risk through the full path: the runner's loop on the paper broker.

A run of ``fast_test`` (enters on the first candle, and after each closed trade) sizes with the
settings in the database, places its bracket on the simulated exchange, and a driver thread moves
the price to the stop. Checked from the exchange's own fills and fees:
- 5 % of equity loses 5 % (within one amount step); a fixed $50 loses $50 (within one step);
- each protection (cooldown after a stop-out, daily loss limit, max drawdown) pauses the run on
  the next signal after the stop-out, with the protection's code as the reason.

Uses the runner's test kit (``apps.strategies.tests.runner_kit``).
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from fractions import Fraction

import pytest

from apps.brokers.simulator.instruments import CURRENCY_QUANTUM
from apps.monitoring.models import Event
from apps.orders.gateway import BrokerGateway
from apps.orders.models import Trade
from apps.risk.services import risk_settings_update
from apps.risk.tests.fills import fills_loss
from apps.strategies.models import RunState
from apps.strategies.runner.loop import run_loop_forever
from apps.strategies.tests.runner_kit import make_run, paper_gateway

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
D = Decimal


@pytest.fixture(autouse=True)
def _fast_loop(settings):
    settings.RUNNER_CANDLE_WAIT_S = 0.01
    # A slower position poll narrows a race in ``orders.services.bracket_check`` (it reads the
    # legs' states before the position, so a stop that fills between the two reads is recorded
    # as exit_reason "closed"; reported to the orders engineer: read the position first).
    settings.RUNNER_POSITION_POLL_S = 0.3
    settings.RUNNER_LOCK_TTL_MS = 5000


class StopOutDriver:
    """Moves the paper market: a new candle only while flat (so the entry fills at the candle
    the strategy saw), the price straight to the stop while a position is open.

    ``stop_outs``: after that many stop fills, wait ``settle`` seconds and end the loop (or,
    with ``keep_stepping``, keep giving the loop candles until it ends by itself).
    """

    def __init__(
        self,
        gateway: BrokerGateway,
        stop: threading.Event,
        instrument: str,
        *,
        stop_outs: int = 1,
        keep_stepping: bool = False,
        step_every: float = 1.0,
        settle: float = 2.0,
    ) -> None:
        self.gateway = gateway
        self.stop = stop
        self.instrument = instrument
        self.stop_outs = stop_outs
        self.keep_stepping = keep_stepping
        self.step_every = step_every
        self.settle = settle
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._drive, daemon=True)

    def __enter__(self) -> StopOutDriver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _look(self) -> tuple[bool, Decimal | None, int]:
        engine = self.gateway.broker.engine
        in_position = any(p.size for p in engine.positions())
        stops = [o for o in engine.open_orders() if o.label.endswith("-sl")]
        trigger = stops[0].trigger_price if stops and in_position else None
        stopped = sum(1 for t in engine.trades() if t.label.endswith("-sl"))
        return in_position, trigger, stopped

    def _drive(self) -> None:
        engine = self.gateway.broker.engine
        last_step = time.monotonic()
        try:
            while not self.stop.is_set():
                in_position, trigger, stopped = self.gateway.on_loop(self._look)
                if stopped >= self.stop_outs and not self.keep_stepping:
                    time.sleep(self.settle)  # the loop records the trade
                    self.stop.set()
                    return
                if trigger is not None:
                    price = float(trigger)
                    self.gateway.on_loop(lambda: engine.move_price(self.instrument, price))
                elif not in_position and time.monotonic() - last_step > self.step_every:
                    self.gateway.run(self.gateway.broker.step(1))
                    last_step = time.monotonic()
                time.sleep(0.05)
        except BaseException as exc:  # surfaced by the test
            if not self.gateway.loop.is_running():
                return  # the loop ended (paused, stopped) and closed its gateway under us
            self.error = exc
            self.stop.set()


def run_until(run, gateway, driver_kwargs, max_seconds: float = 45) -> tuple[str, StopOutDriver]:
    stop = threading.Event()
    with StopOutDriver(gateway, stop, run.instrument, **driver_kwargs) as driver:
        outcome = run_loop_forever(
            run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=max_seconds
        )
    assert driver.error is None, driver.error
    return outcome, driver


def start_run(instrument: str):
    run = make_run(strategy="fast_test", params={"stop_loss_pct": 1.0, "take_profit_pct": 3.0})
    run.instrument = instrument
    run.save(update_fields=["instrument"])
    return run


@pytest.mark.parametrize(
    ("instrument", "mode", "value", "include_fees"),
    [
        ("BTC-PERPETUAL", "percent", "5", True),
        ("BTC-PERPETUAL", "fixed", "50", False),
        ("BTC_USDC-PERPETUAL", "percent", "5", False),
        ("BTC_USDC-PERPETUAL", "fixed", "50", True),
    ],
)
def test_a_stopped_paper_trade_loses_the_chosen_risk(instrument, mode, value, include_fees):
    risk_settings_update(mode=mode, value=D(value), leverage_cap=D("50"), include_fees=include_fees)
    run = start_run(instrument)
    gateway = paper_gateway()
    engine = gateway.broker.engine
    spec = engine.spec(instrument)
    currency = spec.settlement_currency
    equity_before = engine.account(currency).equity  # the exchange's figure, before any fill

    outcome, _ = run_until(run, gateway, {"stop_outs": 1})
    assert outcome == "shutdown"

    trade = Trade.objects.get()
    # "closed": the bracket_check race above; the exchange's fills below show it was the stop.
    assert trade.exit_reason in ("stop_loss", "closed")
    assert trade.risk_settings["mode"] == mode and trade.risk_settings["value"] == value
    prefix = f"tb-{trade.bracket.bracket_id}-"
    fills = [t for t in engine.trades() if t.label.startswith(prefix)]
    assert [f.label.removeprefix(prefix) for f in fills] == ["entry", "sl"]
    entry, stop = Fraction(fills[0].price), Fraction(fills[1].price)
    assert fills[0].price == trade.bracket.signal_price, "entry filled at the price it was sized at"

    price_loss, fees = fills_loss(spec.is_inverse, fills)
    loss = price_loss + fees if include_fees else price_loss
    usd_per_unit = stop if spec.is_inverse else Fraction(1)
    if mode == "percent":
        target = Fraction(equity_before) * Fraction(D(value)) / 100
    else:
        target = Fraction(D(value)) / usd_per_unit
    step = Fraction(spec.amount_step)
    rate = Fraction(spec.taker_fee)
    if spec.is_inverse:
        step_loss = step * abs(1 / stop - 1 / entry) + (
            rate * step * (1 / entry + 1 / stop) if include_fees else 0
        )
    else:
        step_loss = step * abs(entry - stop) + (rate * step * (entry + stop) if include_fees else 0)
    slack = 3 * Fraction(CURRENCY_QUANTUM[currency])  # the exchange rounds each fill's P&L and fee
    assert loss <= target + slack, f"lost {float(loss)} {currency}, the risk was {float(target)}"
    assert target - loss < step_loss + slack, "within one amount step of the risk"
    if mode == "fixed":
        assert loss * usd_per_unit <= Fraction(D(value)) + slack * usd_per_unit
    # The trade's record agrees with the exchange's books.
    equity_after = engine.account(currency).equity
    assert abs(Fraction(equity_before - equity_after) - (price_loss + fees)) <= slack
    assert abs(Fraction(trade.pnl) + price_loss + fees) <= slack
    gateway.close()


@pytest.mark.parametrize(
    ("protection", "code"),
    [
        ({"cooldown_minutes": 60}, "COOLDOWN_AFTER_STOP"),
        ({"daily_loss_limit_pct": D("4")}, "DAILY_LOSS_LIMIT"),
        ({"max_drawdown_pct": D("4")}, "MAX_DRAWDOWN"),
    ],
)
def test_each_protection_pauses_the_run_after_a_stop_out(protection, code):
    # A 5 % loss at the stop, then the next signal meets the protection.
    risk_settings_update(
        mode="percent", value=D("5"), leverage_cap=D("50"), include_fees=True, **protection
    )
    run = start_run("BTC-PERPETUAL")
    gateway = paper_gateway()
    engine = gateway.broker.engine

    outcome, _ = run_until(run, gateway, {"stop_outs": 1, "keep_stepping": True, "step_every": 0.5})

    assert outcome == "paused"
    run.refresh_from_db()
    assert run.state == RunState.PAUSED
    pause = run.transitions.filter(to_state=RunState.PAUSED).get()
    assert pause.reason == code
    assert pause.message
    assert Event.objects.filter(kind="protection_tripped", run_id=run.id).exists()
    # One trade (the stop-out), nothing open after the pause: no second bracket was placed.
    assert Trade.objects.count() == 1
    assert not [p for p in engine.positions() if p.size]
    assert not engine.open_orders()
    gateway.close()
