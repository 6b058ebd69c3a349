"""The Strategy interface, its value types and the BaseStrategy every strategy extends.

Pure Python + numpy: no Django. A strategy decides on CLOSED candles only: ``analyze`` gets
the closed candles so far (a list of :class:`apps.brokers.base.Candle` or a :class:`Candles`
of arrays) and returns a :class:`Signal` or ``None``. It looks at the last ``history``
candles only, so the runner (which keeps a bounded window) and the backtester (which slices
the whole file) give it exactly the same input and get exactly the same answer.

A strategy may also offer ``precompute(candles) -> int8 array``: for every index ``i`` the side
that ``analyze`` would return on the candles up to ``i`` (+1 buy, -1 sell, 0 nothing), computed
in one vectorised pass. The backtester uses it to skip quiet candles; a test proves it equal
to ``analyze`` candle by candle.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from apps.brokers.base import Candle, Side

Price = float | Decimal


class ParamError(ValueError):
    """A parameter is unknown or out of its bounds. ``field`` names it for a 400 answer."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ParamType(enum.StrEnum):
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    CHOICE = "choice"


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One parameter of a strategy: what the page shows and what validation enforces."""

    name: str
    type: ParamType
    default: Any
    min: float | None = None
    max: float | None = None
    help: str = ""
    choices: tuple[str, ...] = ()

    def coerce(self, value: Any) -> Any:
        """The value in this parameter's type, or ParamError naming the parameter."""
        if self.type is ParamType.BOOL:
            if isinstance(value, bool):
                return value
            raise ParamError(self.name, "must be true or false")
        if self.type is ParamType.CHOICE:
            if value in self.choices:
                return value
            raise ParamError(self.name, f"must be one of {', '.join(self.choices)}")
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
            raise ParamError(self.name, f"must be a number ({self.type})")
        try:
            number = float(value)
        except ValueError:
            raise ParamError(self.name, f"must be a number ({self.type})") from None
        if not math.isfinite(number):
            raise ParamError(self.name, "must be a finite number")
        if self.type is ParamType.INT:
            if number != int(number):
                raise ParamError(self.name, "must be a whole number")
            number = int(number)
        if self.min is not None and number < self.min:
            raise ParamError(self.name, f"must be at least {self.min:g}")
        if self.max is not None and number > self.max:
            raise ParamError(self.name, f"must be at most {self.max:g}")
        return number

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "type": str(self.type),
            "default": self.default,
            "min": self.min,
            "max": self.max,
            "help": self.help,
        }
        if self.type is ParamType.CHOICE:
            data["choices"] = list(self.choices)
        return data


def validate_param_values(
    schema: Sequence[ParamSpec], params: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Defaults overlaid with ``params``, each coerced and bounded; unknown names refused."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ParamError("params", "must be an object")
    known = {spec.name: spec for spec in schema}
    for name in params:
        if name not in known:
            raise ParamError(name, "unknown parameter")
    return {spec.name: spec.coerce(params.get(spec.name, spec.default)) for spec in schema}


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One thing a strategy looked at: shown live on the page."""

    name: str
    value: Any
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        value = self.value
        if isinstance(value, float | np.floating):
            value = None if math.isnan(value) else round(float(value), 6)
        return {"name": self.name, "value": value, "passed": bool(self.passed)}


def price_on_tick(price: Price, tick: Decimal, rounding: str | None = None) -> Decimal:
    """``price`` as a multiple of ``tick``: nearest (half-even) by default, or ``rounding``
    (ROUND_FLOOR, ROUND_CEILING, ...)."""
    exact = (Decimal(repr(float(price))) if isinstance(price, float) else Decimal(price)) / tick
    # Always an explicit rounding: libraries (ccxt) change the thread's decimal context.
    steps = exact.to_integral_value(rounding=rounding or ROUND_HALF_EVEN)
    return steps * tick


@dataclass(frozen=True, slots=True)
class Signal:
    """A decision to enter: side, prices (not yet on the tick), why, and what was looked at."""

    side: Side
    entry: Price
    stop: Price
    take_profit: Price
    reason: str
    checkpoints: tuple[Checkpoint, ...] = ()
    strength: float = 0.0  # 0..100, informative

    def __post_init__(self) -> None:
        entry, stop, target = float(self.entry), float(self.stop), float(self.take_profit)
        if not all(math.isfinite(v) and v > 0 for v in (entry, stop, target)):
            raise ValueError("signal prices must be positive and finite")
        if self.side is Side.BUY and not stop < entry < target:
            raise ValueError("a buy needs stop < entry < take-profit")
        if self.side is Side.SELL and not target < entry < stop:
            raise ValueError("a sell needs take-profit < entry < stop")

    def prices_on_tick(self, tick: Decimal) -> tuple[Decimal, Decimal, Decimal]:
        """(entry, stop, take-profit) as multiples of ``tick``: the entry and the target to the
        nearest tick, the stop away from the entry (the amount is sized on that stop, so the
        risk stays within the setting). The one rounding rule of the runner and the backtest."""
        entry = price_on_tick(self.entry, tick)
        away = ROUND_FLOOR if self.side is Side.BUY else ROUND_CEILING
        return entry, price_on_tick(self.stop, tick, away), price_on_tick(self.take_profit, tick)

    def as_dict(self) -> dict[str, Any]:
        return {
            "side": str(self.side),
            "entry": str(self.entry),
            "stop": str(self.stop),
            "take_profit": str(self.take_profit),
            "reason": self.reason,
            "strength": self.strength,
            "checkpoints": [c.as_dict() for c in self.checkpoints],
        }


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """What ``on_trade_closed`` receives once the stop or the target (or a manual close) filled."""

    side: Side
    entry_price: Decimal
    exit_price: Decimal
    amount: Decimal
    pnl: Decimal  # realized, before fees, in the settlement currency
    fees: Decimal
    entry_time_ms: int
    exit_time_ms: int
    reason: str  # stop_loss, take_profit, manual, ...


@dataclass(frozen=True, slots=True)
class Candles:
    """Closed candles as parallel numpy arrays (oldest first). Slicing gives views."""

    open_time_ms: NDArray[np.int64]
    open: NDArray[np.float64]
    high: NDArray[np.float64]
    low: NDArray[np.float64]
    close: NDArray[np.float64]
    volume: NDArray[np.float64]

    @classmethod
    def from_list(cls, candles: Sequence[Candle]) -> Candles:
        rows = [(c.open_time_ms, c.open, c.high, c.low, c.close, c.volume) for c in candles]
        table = np.array(rows, dtype=np.float64).reshape(len(rows), 6)
        return cls(
            open_time_ms=table[:, 0].astype(np.int64),
            open=table[:, 1].copy(),
            high=table[:, 2].copy(),
            low=table[:, 3].copy(),
            close=table[:, 4].copy(),
            volume=table[:, 5].copy(),
        )

    @classmethod
    def coerce(cls, candles: Candles | Sequence[Candle]) -> Candles:
        return candles if isinstance(candles, Candles) else cls.from_list(candles)

    def __len__(self) -> int:
        return len(self.close)

    def slice(self, start: int, stop: int) -> Candles:
        return Candles(
            self.open_time_ms[start:stop],
            self.open[start:stop],
            self.high[start:stop],
            self.low[start:stop],
            self.close[start:stop],
            self.volume[start:stop],
        )

    def tail(self, n: int) -> Candles:
        return self if len(self) <= n else self.slice(len(self) - n, len(self))

    def candle(self, i: int) -> Candle:
        return Candle(
            int(self.open_time_ms[i]),
            float(self.open[i]),
            float(self.high[i]),
            float(self.low[i]),
            float(self.close[i]),
            float(self.volume[i]),
        )


@runtime_checkable
class Strategy(Protocol):
    id: str
    name: str
    description: str
    timeframe: int  # minutes per candle
    params: dict[str, Any]

    @property
    def warmup(self) -> int: ...

    @property
    def history(self) -> int: ...

    def analyze(self, candles: Candles | Sequence[Candle]) -> Signal | None: ...

    def calculate_stop_loss(self, entry: float, side: Side, candles: Candles) -> float: ...

    def calculate_take_profit(
        self, entry: float, side: Side, stop: float, candles: Candles
    ) -> float: ...

    def state(self) -> dict[str, Any]: ...

    def on_trade_closed(self, trade: ClosedTrade) -> None: ...


@dataclass(slots=True)
class _Memory:
    candles_seen: int = 0
    last_candle_ms: int | None = None
    checkpoints: tuple[Checkpoint, ...] = ()
    indicators: dict[str, float] = field(default_factory=dict)
    last_signal: Signal | None = None
    last_trade: ClosedTrade | None = None
    trades_closed: int = 0
    status: str = "idle"


class BaseStrategy:
    """What strategies share: parameters, warm-up, the page state and the default brackets.

    A subclass sets ``id``, ``name``, ``description``, ``params_schema`` and implements
    ``decide(candles)`` (called once the warm-up is met, with the last ``history`` candles).
    ``look`` records a checkpoint; ``make_signal`` builds a signal with the stop and target of
    ``calculate_stop_loss`` / ``calculate_take_profit``.
    """

    id: ClassVar[str] = ""
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params_schema: ClassVar[tuple[ParamSpec, ...]] = ()
    timeframe: ClassVar[int] = 1

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params: dict[str, Any] = validate_param_values(self.params_schema, params)
        self.check_params(self.params)
        self._memory = _Memory()
        self._looked: list[Checkpoint] = []

    # --- what subclasses override -------------------------------------------------------

    def check_params(self, params: dict[str, Any]) -> None:
        """Rules between parameters (fast < slow, ...); raise ParamError naming the field."""

    @property
    def warmup(self) -> int:
        """Closed candles needed before the first decision."""
        return 1

    @property
    def history(self) -> int:
        """Closed candles ``decide`` looks at (the last ones); the runner keeps at least this."""
        return self.warmup

    def decide(self, candles: Candles) -> Signal | None:
        raise NotImplementedError

    def precompute(self, candles: Candles) -> NDArray[np.int8] | None:
        """Optional vectorised decisions (+1/-1/0 per index), identical to ``analyze``'s sides."""
        return None

    def calculate_stop_loss(self, entry: float, side: Side, candles: Candles) -> float:
        pct = float(self.params["stop_loss_pct"]) / 100.0
        return entry * (1 - pct) if side is Side.BUY else entry * (1 + pct)

    def calculate_take_profit(
        self, entry: float, side: Side, stop: float, candles: Candles
    ) -> float:
        pct = float(self.params["take_profit_pct"]) / 100.0
        return entry * (1 + pct) if side is Side.BUY else entry * (1 - pct)

    def on_trade_closed(self, trade: ClosedTrade) -> None:
        self._memory.last_trade = trade
        self._memory.trades_closed += 1

    # --- the interface ------------------------------------------------------------------

    def analyze(self, candles: Candles | Sequence[Candle]) -> Signal | None:
        data = Candles.coerce(candles)
        memory = self._memory
        memory.candles_seen = len(data)
        memory.last_candle_ms = int(data.open_time_ms[-1]) if len(data) else None
        self._looked = []
        if len(data) < self.warmup:
            memory.status = "warming_up"
            memory.checkpoints = (Checkpoint("warm-up", f"{len(data)}/{self.warmup}", False),)
            return None
        signal = self.decide(data.tail(self.history))
        memory.checkpoints = signal.checkpoints if signal else tuple(self._looked)
        memory.status = "signal_detected" if signal else "analyzing"
        if signal:
            memory.last_signal = signal
        return signal

    def state(self) -> dict[str, Any]:
        memory = self._memory
        return {
            "strategy": self.id,
            "status": memory.status,
            "candles": memory.candles_seen,
            "warmup": self.warmup,
            "last_candle_ms": memory.last_candle_ms,
            "checkpoints": [c.as_dict() for c in memory.checkpoints],
            "indicators": {
                k: (None if math.isnan(v) else round(v, 6)) for k, v in memory.indicators.items()
            },
            "last_signal": memory.last_signal.as_dict() if memory.last_signal else None,
            "trades_closed": memory.trades_closed,
        }

    # --- helpers for subclasses ---------------------------------------------------------

    def look(self, name: str, value: Any, passed: bool) -> bool:
        """Record a checkpoint and return whether it passed (so rules read as ``and`` chains)."""
        self._looked.append(Checkpoint(name, value, bool(passed)))
        return bool(passed)

    def note(self, **indicators: float) -> None:
        """Remember indicator values for the page."""
        self._memory.indicators.update({k: float(v) for k, v in indicators.items()})

    def make_signal(
        self, side: Side, candles: Candles, reason: str, strength: float = 0.0
    ) -> Signal:
        entry = float(candles.close[-1])
        stop = self.calculate_stop_loss(entry, side, candles)
        target = self.calculate_take_profit(entry, side, stop, candles)
        return Signal(side, entry, stop, target, reason, tuple(self._looked), strength)

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The catalogue entry: what GET /api/v2/strategies shows."""
        return {
            "id": cls.id,
            "name": cls.name,
            "description": cls.description,
            "timeframe": cls.timeframe,
            "params": [spec.as_dict() for spec in cls.params_schema],
            "warmup": cls().warmup,
            "fast_backtest": cls.precompute is not BaseStrategy.precompute,
        }


def percent_params(stop: float, target: float) -> tuple[ParamSpec, ParamSpec]:
    """The stop-loss / take-profit percentage parameters most strategies share."""
    return (
        ParamSpec(
            "stop_loss_pct", ParamType.FLOAT, stop, 0.01, 50.0, "Stop-loss distance from entry, %"
        ),
        ParamSpec(
            "take_profit_pct",
            ParamType.FLOAT,
            target,
            0.01,
            100.0,
            "Take-profit distance from entry, %",
        ),
    )
