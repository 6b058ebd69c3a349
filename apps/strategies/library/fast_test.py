"""FastTest: exercises the infrastructure, not the market.

It signals on the first closed candle it sees and, because the runner only analyses while
flat, on the first closed candle after each closed trade. Sides alternate: the first is
``first_side`` (buy by default), then the opposite of the last closed trade's side. Stop and
target are a fixed percentage from entry (0.3 % each, like the original).

Chosen: the original bought every time (backend) or every 60 s of wall-clock (frontend); here
it alternates per closed trade so both sides of the bracket code run, and it never looks at
the clock.
"""

from __future__ import annotations

from apps.brokers.base import Side
from apps.strategies.base import (
    BaseStrategy,
    Candles,
    ClosedTrade,
    ParamSpec,
    ParamType,
    Signal,
    percent_params,
)


class FastTest(BaseStrategy):
    id = "fast_test"
    name = "Fast Test"
    description = "Enters at once and after every closed trade, alternating long and short."
    params_schema = (
        ParamSpec(
            "first_side",
            ParamType.CHOICE,
            "buy",
            help="Side of the first trade",
            choices=("buy", "sell"),
        ),
        *percent_params(0.3, 0.3),
    )

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self._next_side = Side(self.params["first_side"])

    def decide(self, candles: Candles) -> Signal | None:
        self.look("flat", True, True)
        self.look("next side", str(self._next_side), True)
        return self.make_signal(self._next_side, candles, f"fast test {self._next_side}", 100.0)

    def on_trade_closed(self, trade: ClosedTrade) -> None:
        super().on_trade_closed(trade)
        self._next_side = trade.side.opposite
