"""Backtest = live runner: the trade list of a backtest equals the trade list of a paper replay of
the same candles through the live loop (same strategy, same risk settings, same equity).

The live side is the real loop (``run_loop_forever``) on a manual PaperBroker. The market moves
one candle at a time, and only when the loop has nothing left to do: the gateway steps the next
candle when the loop asks for an item and its inbox is empty, then waits until every item of that
candle (fills, orders, the closed candle) is in the inbox. So the replay is deterministic, like
the backtest, and any difference is a difference of rules.
"""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

import pytest

from apps.brokers.paper import PaperBroker
from apps.brokers.simulator.feed import SAMPLE_CANDLES, load_candles
from apps.orders.gateway import BrokerGateway, StreamItem
from apps.orders.models import Bracket, BracketState, Trade
from apps.strategies.backtest import BacktestConfig, run_backtest
from apps.strategies.base import Candles
from apps.strategies.registry import get_strategy
from apps.strategies.runner.loop import run_loop_forever
from apps.strategies.tests.runner_kit import make_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_loop")]

EQUITY = Decimal("1")
FIRST, COUNT = 600, 300  # a slice of the project's sample candles


@pytest.fixture
def candles():
    return load_candles(SAMPLE_CANDLES)[FIRST : FIRST + COUNT]


class SteppingGateway(BrokerGateway):
    """The real gateway; the next candle closes only when the loop is idle (inbox empty).

    ``candle_first``: the closed candle reaches the loop before the order and fill events of
    the same minute (on a real exchange they come on different channels, in either order).
    """

    def __init__(self, broker: PaperBroker, stop: threading.Event, *, candle_first: bool) -> None:
        super().__init__(broker)
        self.stop = stop
        self.candle_first = candle_first
        self.stepped = 0

    def next_item(self, timeout: float) -> StreamItem | None:
        if self.inbox.empty() and not self.stop.is_set():
            if self.run(self._step()):
                self.stepped += 1
                if self.candle_first:
                    items = []
                    while not self.inbox.empty():
                        items.append(self.inbox.get_nowait())
                    for item in sorted(items, key=lambda i: i.kind != "candle"):
                        self.inbox.put(item)
            else:
                self.stop.set()  # the data ran out: the loop ends on its next pass
        return super().next_item(timeout)

    async def _step(self) -> bool:
        broker: PaperBroker = self.broker
        for _ in range(10_000):  # the loop's streams listen before anything moves
            if broker._candle_queues and broker._event_queues:
                break
            await asyncio.sleep(0)
        closed = await broker.step(1)
        queues = (*broker._candle_queues, *broker._event_queues)
        for _ in range(10_000):  # every item of this candle forwarded to the inbox
            if all(q.empty() for q in queues):
                break
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        return bool(closed)


def live_trades(
    strategy: str, params: dict, candles, *, candle_first: bool
) -> tuple[list[Trade], bool, int]:
    run = make_run(strategy=strategy, params=params)
    stop = threading.Event()
    broker = PaperBroker(
        candles=candles,
        manual=True,
        warmup=0,
        speed="max",
        loop=False,
        rebase_time=False,  # the exchange's clock is the candles' own, as in the backtest
        balances={"BTC": EQUITY},
    )
    gateway = SteppingGateway(broker, stop, candle_first=candle_first)
    outcome = run_loop_forever(run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=60)
    assert outcome == "shutdown"
    assert gateway.stepped == len(candles)  # every candle went through the loop
    still_open = Bracket.objects.filter(run_id=run.id, state=BracketState.OPEN).exists()
    gateway.close()
    return list(Trade.objects.filter(run_id=run.id).order_by("opened_at")), still_open, run.id


def backtest(strategy: str, params: dict, candles):
    from apps.risk.models import RiskSettings

    risk = RiskSettings.objects.get_or_create(pk=1)[0]
    config = BacktestConfig(
        equity=EQUITY,
        risk_mode=risk.mode,
        risk_value=risk.value,
        leverage_cap=risk.leverage_cap,
        include_fees=risk.include_fees,
    )
    return run_backtest(get_strategy(strategy, params), Candles.from_list(candles), config)


def as_rows_live(trades: list[Trade]) -> list[tuple]:
    return [
        (
            t.side,
            int(t.opened_at.timestamp() * 1000),
            int(t.closed_at.timestamp() * 1000),
            t.entry_price.normalize(),
            t.exit_price.normalize(),
            t.amount.normalize(),
            t.exit_reason,
            (t.pnl + t.fees).normalize(),  # P&L before fees, as the backtest states it
            t.fees.normalize(),
        )
        for t in trades
    ]


def as_rows_backtest(trades) -> list[tuple]:
    q = Decimal("1e-12")  # the trade row keeps 12 decimals of the settlement currency
    return [
        (
            str(t.side),
            t.entry_time_ms,
            t.exit_time_ms,
            t.entry_price.quantize(Decimal("1e-10")).normalize(),
            t.exit_price.quantize(Decimal("1e-10")).normalize(),
            t.amount.normalize(),
            t.reason,
            (t.net.quantize(q) + t.fees.quantize(q)).normalize(),
            t.fees.quantize(q).normalize(),
        )
        for t in trades
    ]


@pytest.mark.slow
@pytest.mark.parametrize("candle_first", [False, True], ids=["events-first", "candle-first"])
@pytest.mark.parametrize(
    ("strategy", "params"),
    [
        ("ma_cross", {"fast": 3, "slow": 8, "stop_loss_pct": 0.3, "take_profit_pct": 0.6}),
        ("fast_test", {}),
    ],
)
def test_a_backtest_and_the_live_loop_make_the_same_trades(candles, strategy, params, candle_first):
    result = backtest(strategy, params, candles)
    trades, still_open, _ = live_trades(strategy, params, candles, candle_first=candle_first)
    closed = [t for t in result.trades if t.reason != "end_of_data"]
    assert len(closed) >= 3, "the slice must make the strategy trade several times"
    # the backtest closes what is open when the data ends; the live position is still open
    assert still_open == (len(closed) < len(result.trades))
    assert as_rows_live(trades) == as_rows_backtest(closed)
