"""The exchange simulator's matching engine: Deribit semantics, pure Python, no Django.

One ``ExchangeEngine`` is one Deribit account on a set of perpetuals (``instruments.py``). Orders,
linked orders (OTO / OCO / OTOCO), fills, positions, balances and fees follow
``shared/deribit-api.md``. The engine has no clock and no feed of its own: the caller moves the
price (``step_candle`` for a candle walked along its intra-candle path, ``set_price`` for a jump,
``move_price`` for a continuous move) and sets ``now_ms``.

Prices and fills
- Every instrument has a last, a mark and an index price. Moving the price moves all three
  together (mark = index = last); ``set_prices`` can set them apart, and trigger orders then fire
  on the price their ``trigger`` names.
- A market order fills at once at the last price rounded to the tick, ``slippage_ticks`` worse.
- A limit order that crosses when placed fills at once at the last price (taker); otherwise it
  rests and fills at its own price (maker) when the price touches it.
- Stop / take orders fire when their trigger price is touched; ``*_market`` then fill at the
  trigger price (``slippage_ticks`` worse) or, when the price jumped past it (a gap: the candle's
  open, ``set_price``), at the price after the jump. ``*_limit`` become a limit at ``price``.
- Liquidity is unlimited unless ``fill_cap`` gives, per instrument, the most a resting limit
  order fills per price event (one candle, one ``set_price`` / ``move_price`` / ``set_prices``),
  to produce partial fills.
- A reduce-only order never grows a position: each fill is capped to the position; a market-style
  remainder is cancelled; a triggered reduce-only order with nothing to reduce is ``rejected``.
  A non-trigger reduce-only order that cannot reduce the position when placed is refused
  (11030 ``other_reject``, reason ``reduce_only``).

Intra-candle path (``intra_candle_path``): open → nearer extreme → farther extreme → close. When the
open is exactly as far from the high as from the low, a candle that closes below its open visits
the high first, any other candle the low first. The previous close → open step is a gap; the
other three legs are continuous, and orders along a leg fire in the order the price reaches them.

Accounts: one per settlement currency. ``balance`` = initial + realized P&L − fees (P&L and fees
rounded per fill to the currency's quantum, see ``contract.py``); ``equity`` = balance + floating
P&L at the mark; initial margin = exposure / max_leverage, where the exposure of an instrument is
max(|position + open buys|, |position − open sells|) at the mark, open orders counting unless
reduce-only or not yet activated; maintenance margin = half the initial margin; ``available_funds``
= equity − initial margin. An order that raises the initial margin above the equity is refused
with 10009 ``not_enough_funds``. There is no funding and no liquidation.

Speed: the resting orders of an instrument define two thresholds, the lowest price at which a
rising price fills or triggers something and the highest at which a falling price does. A candle
whose high and low stay between them costs a few comparisons (``step_candle``), and
``replay_arrays`` skips whole stretches of such candles with numpy.

Events: every atomic change (placement, edit, cancel, each fill or trigger caused by the price)
is reported as one ``records.Changes`` per instrument to the callbacks given to ``subscribe``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from apps.brokers.base import Candle, InstrumentSpec

from . import contract
from .errors import (
    ALREADY_CLOSED,
    INVALID_AMOUNT,
    INVALID_INSTRUMENT,
    INVALID_PRICE,
    INVALID_TRIGGER_PRICE,
    NOT_ENOUGH_FUNDS,
    NOT_OPEN_ORDER,
    ORDER_NOT_FOUND,
    OTHER_REJECT,
    POST_ONLY_REJECT,
    PRICE_WRONG_TICK,
    QTY_TOO_LOW,
    STOP_PRICE_WRONG_TICK,
    ExchangeError,
    invalid_params,
)
from .faults import EngineFaults
from .instruments import DEFAULT_BALANCES, default_specs
from .records import (
    Changes,
    PlaceResult,
    SimAccount,
    SimOrder,
    SimPosition,
    SimTicker,
    SimTrade,
)

logger = logging.getLogger(__name__)

ZERO = Decimal(0)
INF = math.inf

ORDER_TYPES = ("market", "limit", "stop_market", "stop_limit", "take_market", "take_limit")
TRIGGER_ORDER_TYPES = frozenset({"stop_market", "stop_limit", "take_market", "take_limit"})
MARKET_STYLE = frozenset({"market", "stop_market", "take_market"})
TRIGGERS = ("last_price", "mark_price", "index_price")
TIME_IN_FORCE = ("good_til_cancelled", "good_til_day", "immediate_or_cancel", "fill_or_kill")
OTO = "one_triggers_other"
OCO = "one_cancels_other"
OTOCO = "one_triggers_one_cancels_other"
LINKED_ORDER_TYPES = (OTO, OCO, OTOCO)
FILL_CONDITIONS = ("first_hit", "complete_fill", "incremental")
OPEN_ORDER_FILTERS = (
    "all",
    "limit",
    "trigger_all",
    "stop_all",
    "stop_limit",
    "stop_market",
    "take_all",
    "take_limit",
    "take_market",
    "stop",
    "take",
)
LIVE_STATES = frozenset({"open", "untriggered", "triggered"})
MAINTENANCE_FRACTION = Decimal("0.5")

Number = Decimal | int | float | str
Listener = Callable[[Changes], None]


def intra_candle_path(
    open_: float, high: float, low: float, close: float
) -> tuple[float, float, float, float]:
    """The four points a candle is walked through: open, nearer extreme, farther extreme, close.

    Ties (open as far from the high as from the low): a candle closing below its open goes to
    the high first; any other candle (rising or flat) to the low first.
    """
    up = high - open_
    down = open_ - low
    if up < down or (up == down and close < open_):
        return (open_, high, low, close)
    return (open_, low, high, close)


def to_decimal(value: Any, param: str) -> Decimal:
    """A number from an API boundary as Decimal (floats through their shortest repr)."""
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool) or value is None:
        raise invalid_params("invalid value", param)
    elif isinstance(value, int):
        return Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value)
        except InvalidOperation:
            raise invalid_params("invalid value", param) from None
    else:
        raise invalid_params("invalid value", param)
    if not result.is_finite():
        raise invalid_params("invalid value", param)
    return result


def _clean(value: Decimal) -> Decimal:
    """An average price without the noise of 28-digit division."""
    value = value.quantize(Decimal("1e-8"))
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


class _Order:
    """An order inside the engine (mutable). Callers only see ``SimOrder`` snapshots."""

    __slots__ = (
        "active",
        "amount",
        "book",
        "cancel_reason",
        "cap_event",
        "created",
        "fill_value",
        "filled",
        "is_buy",
        "is_primary_otoco",
        "is_secondary",
        "label",
        "linked_order_type",
        "oco_ref",
        "order_id",
        "order_type",
        "oto_ids",
        "post_only",
        "price",
        "primary_id",
        "reduce_only",
        "reject_post_only",
        "replaced",
        "seq",
        "state",
        "target_amount",
        "th",
        "time_in_force",
        "trigger",
        "trigger_fill_condition",
        "trigger_price",
        "triggered",
        "up",
        "updated",
    )

    def __init__(self, book: _Book, order_id: str, seq: int, is_buy: bool, fields: dict[str, Any]):
        self.book = book
        self.order_id = order_id
        self.seq = seq
        self.is_buy = is_buy
        self.order_type: str = fields["type"]
        self.amount: Decimal = fields["amount"]
        self.target_amount: Decimal = fields["amount"]
        self.price: Decimal | None = fields["price"]
        self.trigger_price: Decimal | None = fields["trigger_price"]
        self.trigger: str | None = fields["trigger"]
        self.triggered: bool | None = False if self.trigger_price is not None else None
        self.label: str = fields["label"]
        self.time_in_force: str = fields["time_in_force"]
        self.post_only: bool = fields["post_only"]
        self.reject_post_only: bool = fields["reject_post_only"]
        self.reduce_only: bool = fields["reduce_only"]
        self.state = "open"
        self.filled = ZERO
        self.fill_value = ZERO
        self.created = 0
        self.updated = 0
        self.cancel_reason: str | None = None
        self.linked_order_type: str | None = None
        self.trigger_fill_condition: str | None = None
        self.oto_ids: list[str] = []
        self.oco_ref: str | None = None
        self.primary_id: str | None = None
        self.is_secondary = False
        self.is_primary_otoco = False
        self.replaced = False
        self.active = True
        self.cap_event = -1
        self.th = 0.0
        self.up = False

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled

    @property
    def is_trigger(self) -> bool:
        return self.trigger_price is not None

    def arm(self) -> None:
        """Set the threshold price and side at which the price path reaches this order."""
        if self.trigger_price is not None and not self.triggered:
            self.th = float(self.trigger_price)
            # a buy stop / sell take fires on a rising price; a sell stop / buy take on a falling one
            self.up = self.is_buy == self.order_type.startswith("stop")
        else:
            assert self.price is not None
            self.th = float(self.price)
            self.up = not self.is_buy

    def snapshot(self) -> SimOrder:
        book = self.book
        average = ZERO
        if self.filled:
            if book.inverse:
                average = _clean(self.filled / self.fill_value)
            else:
                average = _clean(self.fill_value / self.filled)
        return SimOrder(
            order_id=self.order_id,
            instrument_name=book.name,
            currency=book.currency,
            direction="buy" if self.is_buy else "sell",
            order_type=self.order_type,
            order_state=self.state,
            amount=self.amount,
            filled_amount=self.filled,
            average_price=average,
            price=None if self.order_type in MARKET_STYLE else self.price,
            trigger_price=self.trigger_price,
            trigger=self.trigger,
            triggered=self.triggered,
            label=self.label,
            time_in_force=self.time_in_force,
            post_only=self.post_only,
            reject_post_only=self.reject_post_only,
            reduce_only=self.reduce_only,
            creation_timestamp=self.created,
            last_update_timestamp=self.updated,
            cancel_reason=self.cancel_reason,
            contracts=self.amount / book.spec.contract_size,
            linked_order_type=self.linked_order_type,
            trigger_fill_condition=self.trigger_fill_condition,
            oto_order_ids=tuple(self.oto_ids),
            oco_ref=self.oco_ref,
            primary_order_id=self.primary_id,
            is_secondary_oto=self.is_secondary,
            is_primary_otoco=self.is_primary_otoco,
            replaced=self.replaced,
        )


class _Book:
    """One instrument: its prices, resting orders, thresholds and the account's position in it."""

    __slots__ = (
        "currency",
        "dirty",
        "down",
        "entry_value",
        "index",
        "inverse",
        "last",
        "mark",
        "name",
        "realized",
        "resting",
        "size",
        "spec",
        "split",
        "tick",
        "tick_f",
        "up",
    )

    def __init__(self, spec: InstrumentSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.currency = spec.settlement_currency
        self.inverse = spec.is_inverse
        self.tick = spec.tick_size
        self.tick_f = float(spec.tick_size)
        self.last = 0.0
        self.mark = 0.0
        self.index = 0.0
        self.split = False  # mark or index set apart from last
        self.resting: list[_Order] = []  # active live orders the price can reach
        self.up = INF  # lowest price at which a rising price fills / triggers something
        self.down = -INF  # highest price at which a falling price does
        self.dirty = False
        self.size = ZERO  # signed position, amount units
        self.entry_value = ZERO  # inverse: Σ usd/price (coin); linear: Σ qty·price (USDC)
        self.realized = ZERO

    def ref_price(self, order: _Order) -> float:
        if order.trigger_price is not None and not order.triggered:
            trigger = order.trigger
            if trigger == "mark_price":
                return self.mark
            if trigger == "index_price":
                return self.index
        return self.last

    def price_on_tick(self, value: float) -> Decimal:
        return Decimal(round(value / self.tick_f)) * self.tick

    def reducible(self, order: _Order) -> Decimal:
        """How much of the position an order in ``order``'s direction can reduce."""
        if order.is_buy:
            return -self.size if self.size < 0 else ZERO
        return self.size if self.size > 0 else ZERO

    def eligible(self, order: _Order) -> bool:
        # a resting reduce-only limit that cannot reduce the position would never fill: skip it
        if order.reduce_only and (order.trigger_price is None or order.triggered):
            return self.size < 0 if order.is_buy else self.size > 0
        return True

    def recompute(self) -> None:
        up = INF
        down = -INF
        for order in self.resting:
            if not self.eligible(order):
                continue
            if order.up:
                if order.th < up:
                    up = order.th
            elif order.th > down:
                down = order.th
        self.up = up
        self.down = down
        self.dirty = False

    def entry_price(self) -> Decimal:
        if not self.size:
            return ZERO
        if self.inverse:
            return abs(self.size) / self.entry_value
        return self.entry_value / abs(self.size)

    def floating(self) -> Decimal:
        if not self.size or self.mark <= 0:
            return ZERO
        mark = Decimal(repr(self.mark))
        size = abs(self.size)
        gain = self.entry_value - size / mark if self.inverse else size * mark - self.entry_value
        return contract.money(gain if self.size > 0 else -gain, self.currency)


class _Pending:
    __slots__ = ("orders", "position", "trades")

    def __init__(self) -> None:
        self.orders: dict[str, _Order] = {}
        self.trades: list[SimTrade] = []
        self.position = False


class ExchangeEngine:
    """A simulated Deribit account and matching engine over a set of instruments.

    ``specs``: instrument table (default ``instruments.default_specs()``); ``balances``: starting
    balance per settlement currency (default 1 BTC, 10 ETH, 100,000 USDC); ``prices``: starting
    price per instrument (orders on an instrument without a price are refused with 10012
    ``book_closed``); ``slippage_ticks``: how many ticks worse market-style fills are;
    ``fill_cap``: per instrument, the most a resting limit order fills per price event.
    """

    def __init__(
        self,
        specs: Mapping[str, InstrumentSpec] | None = None,
        balances: Mapping[str, Number] | None = None,
        *,
        prices: Mapping[str, float] | None = None,
        slippage_ticks: int = 0,
        fill_cap: Mapping[str, Number] | None = None,
        now_ms: int | None = None,
    ) -> None:
        self.specs: dict[str, InstrumentSpec] = dict(specs or default_specs())
        self._books: dict[str, _Book] = {name: _Book(spec) for name, spec in self.specs.items()}
        start = DEFAULT_BALANCES if balances is None else balances
        currencies = {book.currency for book in self._books.values()}
        self._initial: dict[str, Decimal] = {c: ZERO for c in currencies}
        for currency, amount in start.items():
            self._initial[currency] = to_decimal(amount, "balance")
        self._balances = dict(self._initial)
        self._realized: dict[str, Decimal] = {c: ZERO for c in self._initial}
        self._fees: dict[str, Decimal] = {c: ZERO for c in self._initial}
        self.slippage_ticks = slippage_ticks
        self.fill_cap: dict[str, Decimal] = {
            name: to_decimal(cap, "fill_cap") for name, cap in (fill_cap or {}).items()
        }
        self.now_ms: int = int(time.time() * 1000) if now_ms is None else now_ms
        self.faults = EngineFaults()
        self.version = 0  # +1 on every account change (order, fill, position)
        self._orders: dict[str, _Order] = {}
        self._live: dict[str, _Order] = {}
        self._labels: dict[str, list[_Order]] = {}
        self._trades: list[SimTrade] = []
        self._listeners: list[Listener] = []
        self._pending: dict[str, _Pending] = {}
        self._order_seq = 0
        self._trade_seq = 0
        self._oco_seq = 0
        self._price_event = 0  # counts price events (a candle, a set/move of the price)
        for name, price in (prices or {}).items():
            self.set_price(name, price)

    # --- events -----------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(changes)`` after every account change; returns the unsubscribe."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _touch(self, book: _Book, order: _Order | None = None, position: bool = False) -> None:
        self.version += 1
        if not self._listeners:
            return
        pending = self._pending.get(book.name)
        if pending is None:
            pending = self._pending[book.name] = _Pending()
        if order is not None:
            pending.orders[order.order_id] = order
        if position:
            pending.position = True

    def _flush(self) -> None:
        if not self._pending:
            return
        pending_all = self._pending
        self._pending = {}
        for name, pending in pending_all.items():
            book = self._books[name]
            changes = Changes(
                instrument_name=name,
                currency=book.currency,
                orders=tuple(order.snapshot() for order in pending.orders.values()),
                trades=tuple(pending.trades),
                positions=(self._position(book),) if pending.position else (),
                timestamp=self.now_ms,
            )
            for listener in list(self._listeners):
                try:
                    listener(changes)
                except Exception:
                    logger.exception("simulator listener failed")

    # --- instruments and prices -------------------------------------------------------------

    def _book(self, instrument: str) -> _Book:
        book = self._books.get(instrument)
        if book is None:
            raise ExchangeError(
                INVALID_INSTRUMENT,
                data={"reason": "unknown instrument", "param": "instrument_name"},
            )
        return book

    def spec(self, instrument: str) -> InstrumentSpec:
        """The instrument's spec (10020 if unknown)."""
        return self._book(instrument).spec

    def instruments(self, currency: str | None = None) -> list[InstrumentSpec]:
        """All specs, optionally of one settlement or base currency."""
        return [
            spec
            for spec in self.specs.values()
            if currency in (None, "any", spec.settlement_currency, spec.base_currency)
        ]

    def ticker(self, instrument: str) -> SimTicker:
        book = self._book(instrument)
        last = book.price_on_tick(book.last)
        return SimTicker(
            instrument_name=book.name,
            last_price=last,
            mark_price=Decimal(repr(book.mark)),
            index_price=Decimal(repr(book.index)),
            best_bid_price=last,
            best_ask_price=last + book.tick,
            timestamp=self.now_ms,
        )

    def last_price(self, instrument: str) -> float:
        return self._book(instrument).last

    def set_price(self, instrument: str, price: float, timestamp_ms: int | None = None) -> None:
        """Jump last, mark and index to ``price`` (a gap: stops crossed fill at ``price``)."""
        book = self._book(instrument)
        if timestamp_ms is not None:
            self.now_ms = timestamp_ms
        self._price_event += 1
        self._move(book, float(price), gap=True)
        self._flush()

    def move_price(self, instrument: str, price: float, timestamp_ms: int | None = None) -> None:
        """Move the price continuously to ``price``: orders on the way fill in the order reached."""
        book = self._book(instrument)
        if timestamp_ms is not None:
            self.now_ms = timestamp_ms
        self._price_event += 1
        if book.last <= 0:
            self._move(book, float(price), gap=True)
        else:
            self._move(book, float(price), gap=False)
        self._flush()

    def set_prices(
        self,
        instrument: str,
        *,
        last: float | None = None,
        mark: float | None = None,
        index: float | None = None,
    ) -> None:
        """Set last, mark and index apart; trigger orders fire on the price they name.

        The next ``step_candle`` / ``move_price`` / ``set_price`` brings them together again.
        """
        book = self._book(instrument)
        if last is not None:
            book.last = float(last)
        if mark is not None:
            book.mark = float(mark)
        if index is not None:
            book.index = float(index)
        book.split = not (book.last == book.mark == book.index)
        self._price_event += 1
        self._settle(book, set())
        self._flush()

    def step_candle(
        self,
        instrument: str,
        open_: float,
        high: float,
        low: float,
        close: float,
        open_time_ms: int,
        duration_ms: int = 60_000,
    ) -> None:
        """Walk one candle through its intra-candle path (the hot path of replays).

        Times: open at ``open_time_ms``, the extremes at 1/3 and 2/3 of the candle, the close at
        its last millisecond; ``now_ms`` ends at ``open_time_ms + duration_ms - 1``.
        """
        book = self._books[instrument]
        if book.dirty:
            book.recompute()
        if high < book.up and low > book.down and not book.split and book.last > 0:
            book.last = book.mark = book.index = close
            self.now_ms = open_time_ms + duration_ms - 1
            return
        self._walk(book, open_, high, low, close, open_time_ms, duration_ms)

    def step(self, instrument: str, candle: Candle, duration_ms: int = 60_000) -> None:
        """``step_candle`` for a ``Candle``."""
        self.step_candle(
            instrument,
            candle.open,
            candle.high,
            candle.low,
            candle.close,
            candle.open_time_ms,
            duration_ms,
        )

    def replay(
        self,
        instrument: str,
        candles: Iterable[Candle],
        duration_ms: int = 60_000,
        on_close: Callable[[Candle], None] | None = None,
    ) -> int:
        """Step every candle; ``on_close(candle)`` after each one. Returns how many were stepped."""
        count = 0
        step = self.step_candle
        for candle in candles:
            step(
                instrument,
                candle.open,
                candle.high,
                candle.low,
                candle.close,
                candle.open_time_ms,
                duration_ms,
            )
            if on_close is not None:
                on_close(candle)
            count += 1
        return count

    def replay_arrays(
        self,
        instrument: str,
        times: Sequence[int],
        opens: Sequence[float],
        highs: Sequence[float],
        lows: Sequence[float],
        closes: Sequence[float],
        start: int = 0,
        stop: int | None = None,
        *,
        until_change: bool = False,
        duration_ms: int = 60_000,
    ) -> int:
        """Step candles ``start..stop-1`` given as numpy arrays (or sequences), skipping quiet ones.

        Candles that reach no resting order are skipped in bulk with numpy; only the candles that
        do are walked. With ``until_change`` it returns right after the first candle that changed
        the account (an order fired or filled): the return value is the index of the next candle
        to step (``stop`` when all were stepped).
        """
        import numpy as np

        book = self._book(instrument)
        n = len(closes) if stop is None else stop
        highs_a = np.asarray(highs, dtype=float)
        lows_a = np.asarray(lows, dtype=float)
        i = start
        chunk = 4096
        while i < n:
            if book.dirty:
                book.recompute()
            if book.split or book.last <= 0:
                hit = i
            else:
                end = min(n, i + chunk)
                mask = (highs_a[i:end] >= book.up) | (lows_a[i:end] <= book.down)
                found = np.flatnonzero(mask)
                if not len(found):
                    book.last = book.mark = book.index = float(closes[end - 1])
                    self.now_ms = int(times[end - 1]) + duration_ms - 1
                    i = end
                    chunk = min(chunk * 2, 1 << 16)
                    continue
                hit = i + int(found[0])
                chunk = 4096
            version = self.version
            self._walk(
                book,
                float(opens[hit]),
                float(highs_a[hit]),
                float(lows_a[hit]),
                float(closes[hit]),
                int(times[hit]),
                duration_ms,
            )
            i = hit + 1
            if until_change and self.version != version:
                return i
        return n

    def _walk(
        self,
        book: _Book,
        open_: float,
        high: float,
        low: float,
        close: float,
        open_time_ms: int,
        duration_ms: int,
    ) -> None:
        _, first, second, _ = intra_candle_path(open_, high, low, close)
        self._price_event += 1
        self.now_ms = open_time_ms
        self._move(book, open_, gap=True)
        self._flush()
        self.now_ms = open_time_ms + duration_ms // 3
        self._move(book, first, gap=False)
        self._flush()
        self.now_ms = open_time_ms + 2 * duration_ms // 3
        self._move(book, second, gap=False)
        self._flush()
        self.now_ms = open_time_ms + duration_ms - 1
        self._move(book, close, gap=False)
        self._flush()

    # --- the matching core ------------------------------------------------------------------

    def _move(self, book: _Book, target: float, *, gap: bool) -> None:
        done: set[str] = set()
        cur = book.last
        if gap or target == cur or cur <= 0:
            book.last = book.mark = book.index = target
            book.split = False
            self._settle(book, done)
            return
        rising = target > cur
        while True:
            self._settle(book, done)
            if book.dirty:
                book.recompute()
            if (target < book.up) if rising else (target > book.down):
                break
            best: _Order | None = None
            for order in book.resting:
                if order.up is not rising or order.order_id in done or not book.eligible(order):
                    continue
                th = order.th
                if rising:
                    if cur < th <= target and (best is None or th < best.th):
                        best = order
                elif target <= th < cur and (best is None or th > best.th):
                    best = order
            if best is None:
                break
            cur = best.th
            book.last = book.mark = book.index = cur
            book.split = False
            done.add(best.order_id)
            self._execute_resting(best, book, exact=True)
        book.last = book.mark = book.index = target
        book.split = False
        self._settle(book, done)

    def _settle(self, book: _Book, done: set[str]) -> None:
        """Fire / fill every order the current prices have reached, nearest first."""
        while True:
            if book.dirty:
                book.recompute()
            last = book.last
            if last <= 0 or (not book.split and book.down < last < book.up):
                return
            best: _Order | None = None
            best_key = 0.0
            for order in book.resting:
                if order.order_id in done or not book.eligible(order):
                    continue
                ref = book.ref_price(order)
                if order.up:
                    if order.th <= ref:
                        key = order.th - ref
                    else:
                        continue
                elif order.th >= ref:
                    key = ref - order.th
                else:
                    continue
                # the farthest from the current price was reached first on the way here
                if best is None or key < best_key or (key == best_key and order.seq < best.seq):
                    best = order
                    best_key = key
            if best is None:
                return
            done.add(best.order_id)
            self._execute_resting(best, book, exact=False)

    def _execute_resting(self, order: _Order, book: _Book, *, exact: bool) -> None:
        """The price reached a resting order: fire a trigger order or fill a limit."""
        if order.trigger_price is not None and not order.triggered:
            order.triggered = True
            order.updated = self.now_ms
            book.dirty = True
            if order.order_type in MARKET_STYLE:
                price = order.trigger_price if exact else book.price_on_tick(book.last)
                self._take_market(order, book, self._slipped(book, price, order.is_buy))
                return
            order.state = "open"
            order.arm()
            self._touch(book, order)
            self._take_if_crossing(order, book)
            return
        amount = order.remaining
        cap = self.fill_cap.get(book.name)
        if cap is not None:
            if order.cap_event == self._price_event:
                return  # one capped fill per price event
            order.cap_event = self._price_event
            amount = min(amount, cap)
        if order.reduce_only:
            amount = min(amount, book.reducible(order))
        if amount <= 0:
            return
        assert order.price is not None
        self._fill(order, book, amount, order.price, maker=True)

    def _slipped(self, book: _Book, price: Decimal, is_buy: bool) -> Decimal:
        if not self.slippage_ticks:
            return price
        shift = book.tick * self.slippage_ticks
        slipped = price + shift if is_buy else price - shift
        return slipped if slipped > 0 else book.tick

    def _crosses(self, order: _Order, book: _Book) -> bool:
        assert order.price is not None
        last = book.last
        return float(order.price) >= last if order.is_buy else float(order.price) <= last

    def _take_if_crossing(self, order: _Order, book: _Book) -> None:
        """A limit that crosses the last price takes at it (never worse than its limit)."""
        if not self._crosses(order, book):
            return
        assert order.price is not None
        price = book.price_on_tick(book.last)
        price = min(price, order.price) if order.is_buy else max(price, order.price)
        amount = order.remaining
        if order.reduce_only:
            amount = min(amount, book.reducible(order))
        if amount > 0:
            self._fill(order, book, amount, price, maker=False)

    def _take_market(self, order: _Order, book: _Book, price: Decimal) -> None:
        """Fill a market-style order now; the remainder (reduce-only cap) is cancelled."""
        amount = order.remaining
        if order.reduce_only:
            amount = min(amount, book.reducible(order))
        if amount <= 0:
            self._close(order, "rejected", "reduce_only")
            return
        self._fill(order, book, amount, price, maker=False)
        if order.live:
            self._close(order, "cancelled", "reduce_only" if order.reduce_only else None)

    def _fill(self, order: _Order, book: _Book, amount: Decimal, price: Decimal, *, maker: bool):
        spec = book.spec
        currency = book.currency
        size = book.size
        signed = amount if order.is_buy else -amount
        realized = ZERO
        if not size or (size > 0) == (signed > 0):
            book.entry_value += amount / price if book.inverse else amount * price
            book.size = size + signed
        else:
            open_size = abs(size)
            closing = min(amount, open_size)
            entry_part = book.entry_value * closing / open_size
            exit_part = closing / price if book.inverse else closing * price
            gain = entry_part - exit_part if book.inverse else exit_part - entry_part
            realized = contract.money(gain if size > 0 else -gain, currency)
            book.size = size + signed
            if closing == open_size:
                rest = amount - closing
                book.entry_value = (
                    (rest / price if book.inverse else rest * price) if rest else ZERO
                )
            else:
                book.entry_value -= entry_part
        fee = contract.fee(spec, amount, price, maker=maker)
        self._balances[currency] += realized - fee
        self._realized[currency] += realized
        self._fees[currency] += fee
        book.realized += realized
        book.dirty = True

        order.filled += amount
        order.fill_value += amount / price if book.inverse else amount * price
        order.updated = self.now_ms
        if order.filled >= order.amount:
            order.state = "filled"
            self._unlist(order)
        self._trade_seq += 1
        trade = SimTrade(
            trade_id=f"{_prefix(currency)}{self._trade_seq}",
            trade_seq=self._trade_seq,
            order_id=order.order_id,
            instrument_name=book.name,
            direction="buy" if order.is_buy else "sell",
            price=price,
            amount=amount,
            fee=fee,
            fee_currency=currency,
            liquidity="M" if maker else "T",
            order_type="limit" if order.order_type.endswith("limit") else "market",
            state=order.state,
            timestamp=self.now_ms,
            label=order.label,
            reduce_only=order.reduce_only,
            post_only=order.post_only,
            profit_loss=realized,
            mark_price=Decimal(repr(book.mark)),
            index_price=Decimal(repr(book.index)),
            contracts=amount / spec.contract_size,
        )
        self._trades.append(trade)
        self._touch(book, order, position=True)
        if self._listeners:
            self._pending[book.name].trades.append(trade)
        self._after_fill(order, book, amount)
        return trade

    # --- linked orders ----------------------------------------------------------------------

    def _after_fill(self, order: _Order, book: _Book, amount: Decimal) -> None:
        if order.oto_ids and order.linked_order_type in (OTO, OTOCO):
            self._activate_secondaries(order, closing=False)
        if order.oco_ref is not None and order.active:
            self._oco_fill(order, book, amount)

    def _activate_secondaries(self, primary: _Order, *, closing: bool) -> None:
        condition = primary.trigger_fill_condition or "first_hit"
        complete = primary.filled >= primary.amount
        for order_id in primary.oto_ids:
            secondary = self._orders[order_id]
            if not secondary.live:
                continue
            if condition == "first_hit" or complete:
                want = secondary.target_amount
            elif condition == "incremental" or closing:
                step = secondary.book.spec.amount_step
                ratio = primary.filled / primary.amount
                want = (secondary.target_amount * ratio / step).to_integral_value(ROUND_DOWN) * step
            else:
                want = ZERO
            if not secondary.active:
                if want > 0:
                    self._activate(secondary, want)
                elif closing:
                    self._close(secondary, "cancelled", "oto_primary_closed", cascade=False)
            elif want > secondary.amount:
                secondary.amount = want
                secondary.updated = self.now_ms
                self._touch(secondary.book, secondary)

    def _activate(self, order: _Order, amount: Decimal) -> None:
        book = order.book
        order.active = True
        order.amount = amount
        order.updated = self.now_ms
        rejection = self.faults.take_rejection(_fault_kind(order, secondary=True))
        if rejection is not None:
            self._close(order, "rejected", rejection.message)
            return
        if order.order_type == "market":
            order.state = "open"
            self._take_market(
                order, book, self._slipped(book, book.price_on_tick(book.last), order.is_buy)
            )
            return
        order.state = "untriggered" if order.is_trigger else "open"
        order.arm()
        book.resting.append(order)
        book.dirty = True
        self._touch(book, order)
        # an activated order already reached by the price is handled by the next _settle

    def _oco_fill(self, order: _Order, book: _Book, amount: Decimal) -> None:
        condition = order.trigger_fill_condition or "first_hit"
        complete = order.filled >= order.amount
        for sibling in self._oco_siblings(order):
            if complete or condition == "first_hit":
                self._close(sibling, "cancelled", "oco_other_closed", cascade=False)
            elif condition == "incremental":
                step = book.spec.amount_step
                base = sibling.target_amount
                cut = (base * amount / order.target_amount / step).to_integral_value(ROUND_DOWN)
                sibling.amount -= cut * step
                if sibling.amount <= sibling.filled:
                    self._close(sibling, "cancelled", "oco_other_closed", cascade=False)
                else:
                    sibling.updated = self.now_ms
                    self._touch(book, sibling)

    def _oco_siblings(self, order: _Order) -> list[_Order]:
        ref = order.oco_ref
        return [
            other
            for other in self._live.values()
            if other.oco_ref == ref and other is not order and other.live
        ]

    def _unlist(self, order: _Order) -> None:
        self._live.pop(order.order_id, None)
        book = order.book
        if order in book.resting:
            book.resting.remove(order)
            book.dirty = True

    def _close(
        self, order: _Order, state: str, reason: str | None, *, cascade: bool = True
    ) -> None:
        """Cancel or reject a live order, with Deribit's cascades over its linked orders."""
        if not order.live:
            return
        order.state = state
        order.cancel_reason = reason
        order.updated = self.now_ms
        self._unlist(order)
        self._touch(order.book, order)
        if order.oto_ids and order.linked_order_type in (OTO, OTOCO):
            if order.filled == 0:
                for order_id in order.oto_ids:
                    secondary = self._orders[order_id]
                    if secondary.live and not secondary.active:
                        self._close(secondary, "cancelled", "oto_primary_closed", cascade=False)
            else:
                self._activate_secondaries(order, closing=True)
        if order.oco_ref is not None and (cascade or order.active):
            for sibling in self._oco_siblings(order):
                self._close(sibling, "cancelled", "oco_other_closed", cascade=False)

    # --- placing orders ---------------------------------------------------------------------

    def buy(self, instrument: str, amount: Number, **kwargs: Any) -> PlaceResult:
        """``private/buy``: see ``place_order``."""
        return self.place_order(instrument, "buy", amount, **kwargs)

    def sell(self, instrument: str, amount: Number, **kwargs: Any) -> PlaceResult:
        """``private/sell``: see ``place_order``."""
        return self.place_order(instrument, "sell", amount, **kwargs)

    def place_order(
        self,
        instrument: str,
        direction: str,
        amount: Number,
        *,
        type: str = "limit",
        price: Number | None = None,
        trigger_price: Number | None = None,
        trigger: str | None = None,
        label: str = "",
        time_in_force: str = "good_til_cancelled",
        post_only: bool = False,
        reject_post_only: bool = False,
        reduce_only: bool = False,
        linked_order_type: str | None = None,
        trigger_fill_condition: str | None = None,
        otoco_config: Sequence[Mapping[str, Any]] | None = None,
    ) -> PlaceResult:
        """Place an order as ``private/buy`` / ``private/sell`` would (Deribit's parameter names).

        Returns the order (for a linked request: the primary, whose ``oto_order_ids`` names the
        secondaries) and the trades it made at once. Raises ``ExchangeError`` with Deribit's code:
        -32602 bad parameter, 10020 unknown instrument, 10002 below the minimum amount, 10021
        amount not a multiple of the contract size, 10023 price ≤ 0, 10043 / 10044 price /
        trigger price off the tick, 11036 trigger on the wrong side of the price, 11054 a
        post-only order that would take, 10009 not enough funds, 10012 no price yet.
        A post-only limit that would cross is always refused (11054), never repriced.
        """
        book = self._book(instrument)
        if direction not in ("buy", "sell"):
            raise invalid_params("invalid value", "direction")
        is_buy = direction == "buy"
        fields = self._validate(
            book,
            {
                "amount": amount,
                "type": type,
                "price": price,
                "trigger_price": trigger_price,
                "trigger": trigger,
                "label": label,
                "time_in_force": time_in_force,
                "post_only": post_only,
                "reject_post_only": reject_post_only,
                "reduce_only": reduce_only,
            },
        )
        configs: list[tuple[bool, dict[str, Any]]] = []
        condition = None
        if linked_order_type is not None:
            if linked_order_type not in LINKED_ORDER_TYPES:
                raise invalid_params("invalid value", "linked_order_type")
            condition = trigger_fill_condition or "first_hit"
            if condition not in FILL_CONDITIONS:
                raise invalid_params("invalid value", "trigger_fill_condition")
            if not otoco_config:
                raise invalid_params("value is required", "otoco_config")
            for raw in otoco_config:
                configs.append(self._validate_config(book, raw, fields, is_buy, linked_order_type))
        elif otoco_config:
            raise invalid_params("value is required", "linked_order_type")
        if book.last <= 0:
            raise ExchangeError(10012, "book_closed", {"reason": "no price yet"})
        self._check_live_order(book, is_buy, fields)
        if linked_order_type == OCO:
            for config_is_buy, config in configs:
                self._check_live_order(book, config_is_buy, config)
        rejection = self.faults.take_rejection(_fault_kind_of(fields["type"], secondary=False))
        if rejection is not None:
            raise rejection
        extra_buy = extra_sell = ZERO
        if not fields["reduce_only"]:
            if is_buy:
                extra_buy = fields["amount"]
            else:
                extra_sell = fields["amount"]
        self._check_margin(book, extra_buy, extra_sell)

        primary = self._new_order(book, is_buy, fields, secondary=False)
        self._register(primary)
        if linked_order_type is not None:
            primary.linked_order_type = linked_order_type
            primary.trigger_fill_condition = condition
            oco_ref = None
            if linked_order_type in (OCO, OTOCO):
                self._oco_seq += 1
                oco_ref = f"{_prefix(book.currency)}OCO-{self._oco_seq}"
            if linked_order_type == OCO:
                primary.oco_ref = oco_ref
            else:
                primary.is_primary_otoco = linked_order_type == OTOCO
            for config_is_buy, config in configs:
                linked = self._new_order(
                    book, config_is_buy, config, secondary=linked_order_type != OCO
                )
                linked.primary_id = primary.order_id
                linked.oco_ref = oco_ref
                linked.trigger_fill_condition = condition
                if linked_order_type == OCO:
                    linked.linked_order_type = OCO
                else:
                    linked.is_secondary = True
                    linked.active = False
                    linked.state = "untriggered"
                    primary.oto_ids.append(linked.order_id)
                self._register(linked)
        trades_before = len(self._trades)
        self._start(primary, book)
        if linked_order_type == OCO:
            for order_id in list(self._live):
                linked = self._live[order_id]
                if linked.primary_id == primary.order_id and linked.oco_ref == primary.oco_ref:
                    self._start(linked, book)
        self._settle(book, set())
        self._flush()
        trades = tuple(
            trade for trade in self._trades[trades_before:] if trade.order_id == primary.order_id
        )
        return PlaceResult(primary.snapshot(), trades)

    def _start(self, order: _Order, book: _Book) -> None:
        """Put a newly registered active order to work: fill, rest or arm its trigger."""
        if not order.live:
            return
        if order.order_type == "market":
            price = self._slipped(book, book.price_on_tick(book.last), order.is_buy)
            self._take_market(order, book, price)
            return
        if order.is_trigger:
            order.state = "untriggered"
            order.arm()
            book.resting.append(order)
            book.dirty = True
            return
        tif = order.time_in_force
        if tif == "fill_or_kill":
            cap = order.remaining
            if order.reduce_only:
                cap = min(cap, book.reducible(order))
            if not self._crosses(order, book) or cap < order.remaining:
                self._close(order, "cancelled", None)
                return
        self._take_if_crossing(order, book)
        if not order.live:
            return
        if tif in ("immediate_or_cancel", "fill_or_kill"):
            self._close(order, "cancelled", None)
            return
        order.arm()
        book.resting.append(order)
        book.dirty = True

    def _new_order(
        self, book: _Book, is_buy: bool, fields: dict[str, Any], *, secondary: bool
    ) -> _Order:
        self._order_seq += 1
        prefix = _prefix(book.currency)
        order_id = f"{prefix}OTO-{self._order_seq}" if secondary else f"{prefix}{self._order_seq}"
        order = _Order(book, order_id, self._order_seq, is_buy, fields)
        order.created = order.updated = self.now_ms
        if order.is_trigger:
            order.state = "untriggered"
        return order

    def _register(self, order: _Order) -> None:
        self._orders[order.order_id] = order
        self._live[order.order_id] = order
        if order.label:
            self._labels.setdefault(order.label, []).append(order)
        self._touch(order.book, order)

    def _validate(self, book: _Book, raw: Mapping[str, Any]) -> dict[str, Any]:
        spec = book.spec
        order_type = raw.get("type") or "limit"
        if order_type not in ORDER_TYPES:
            raise invalid_params("invalid value", "type")
        if raw.get("amount") is None:
            raise invalid_params("value is required", "amount")
        amount = to_decimal(raw["amount"], "amount")
        self._check_amount(book, amount)
        price = None
        if order_type not in MARKET_STYLE:
            if raw.get("price") is None:
                raise invalid_params("value is required", "price")
            price = to_decimal(raw["price"], "price")
            if price <= 0:
                raise ExchangeError(
                    INVALID_PRICE, data={"reason": "must be positive", "param": "price"}
                )
            if price % spec.tick_size:
                raise ExchangeError(PRICE_WRONG_TICK, data={"param": "price"})
        trigger_price = None
        trigger = None
        if order_type in TRIGGER_ORDER_TYPES:
            if raw.get("trigger_price") is None:
                raise invalid_params("value is required", "trigger_price")
            trigger_price = to_decimal(raw["trigger_price"], "trigger_price")
            if trigger_price <= 0:
                raise ExchangeError(
                    INVALID_PRICE, data={"reason": "must be positive", "param": "trigger_price"}
                )
            if trigger_price % spec.tick_size:
                raise ExchangeError(STOP_PRICE_WRONG_TICK, data={"param": "trigger_price"})
            trigger = raw.get("trigger")
            if trigger is None:
                raise invalid_params("value is required", "trigger")
            if trigger not in TRIGGERS:
                raise invalid_params("invalid value", "trigger")
        label = raw.get("label") or ""
        if not isinstance(label, str) or len(label) > 64:
            raise invalid_params("label must be a string of at most 64 characters", "label")
        tif = raw.get("time_in_force") or "good_til_cancelled"
        if tif not in TIME_IN_FORCE:
            raise invalid_params("invalid value", "time_in_force")
        post_only = bool(raw.get("post_only") or False)
        if post_only and order_type != "limit" and order_type not in ("stop_limit", "take_limit"):
            raise ExchangeError(11055, "post_only_not_allowed", {"param": "post_only"})
        return {
            "type": order_type,
            "amount": amount,
            "price": price,
            "trigger_price": trigger_price,
            "trigger": trigger,
            "label": label,
            "time_in_force": tif,
            "post_only": post_only,
            "reject_post_only": bool(raw.get("reject_post_only") or False),
            "reduce_only": bool(raw.get("reduce_only") or False),
        }

    def _validate_config(
        self,
        book: _Book,
        raw: Mapping[str, Any],
        primary: dict[str, Any],
        primary_is_buy: bool,
        linked_order_type: str,
    ) -> tuple[bool, dict[str, Any]]:
        if not isinstance(raw, Mapping):
            raise invalid_params("invalid value", "otoco_config")
        direction = raw.get("direction")
        if direction is None:
            raise invalid_params("value is required", "direction")
        if direction not in ("buy", "sell"):
            raise invalid_params("invalid value", "direction")
        is_buy = direction == "buy"
        if linked_order_type == OTOCO and is_buy == primary_is_buy:
            raise invalid_params("different orders directions are required", "otoco_config")
        merged = dict(raw)
        merged.setdefault("amount", primary["amount"])
        merged.setdefault("type", "limit")
        if raw.get("instrument_name") not in (None, book.name):
            raise invalid_params("invalid value", "instrument_name")
        return is_buy, self._validate(book, merged)

    def _check_amount(self, book: _Book, amount: Decimal) -> None:
        spec = book.spec
        if amount <= 0:
            raise ExchangeError(
                INVALID_AMOUNT, data={"reason": "must be positive", "param": "amount"}
            )
        if amount < spec.min_amount:
            raise ExchangeError(
                QTY_TOO_LOW, data={"reason": f"minimum is {spec.min_amount}", "param": "amount"}
            )
        if amount % spec.amount_step:
            raise ExchangeError(
                INVALID_AMOUNT,
                data={"reason": "must be a multiple of contract size", "param": "amount"},
            )

    def _check_live_order(self, book: _Book, is_buy: bool, fields: dict[str, Any]) -> None:
        """Checks of an order that goes to work now: trigger side, post-only, reduce-only."""
        order_type = fields["type"]
        if fields["trigger_price"] is not None:
            ref = {"mark_price": book.mark, "index_price": book.index}.get(
                fields["trigger"], book.last
            )
            trigger = float(fields["trigger_price"])
            rising = is_buy == order_type.startswith("stop")
            if (rising and trigger <= ref) or (not rising and trigger >= ref):
                raise ExchangeError(
                    INVALID_TRIGGER_PRICE,
                    data={
                        "reason": "trigger price on the wrong side of the price",
                        "param": "trigger_price",
                    },
                )
        elif fields["post_only"] and order_type == "limit":
            price = float(fields["price"])
            if (is_buy and price >= book.last) or (not is_buy and price <= book.last):
                raise ExchangeError(POST_ONLY_REJECT, data={"param": "post_only"})
        if fields["reduce_only"] and fields["trigger_price"] is None:
            reduces = book.size < 0 if is_buy else book.size > 0
            if not reduces:
                raise ExchangeError(
                    OTHER_REJECT, "other_reject reduce_only", {"reason": "reduce_only"}
                )

    def _exposure_margin(self, book: _Book, extra_buy: Decimal, extra_sell: Decimal) -> Decimal:
        buys = extra_buy
        sells = extra_sell
        for order in self._live.values():
            if order.book is book and order.active and not order.reduce_only:
                if order.is_buy:
                    buys += order.remaining
                else:
                    sells += order.remaining
        exposure = max(abs(book.size + buys), abs(book.size - sells))
        if not exposure or book.mark <= 0:
            return ZERO
        mark = Decimal(repr(book.mark))
        value = exposure / mark if book.inverse else exposure * mark
        return value / book.spec.max_leverage

    def _initial_margin(self, currency: str) -> Decimal:
        return sum(
            (
                self._exposure_margin(book, ZERO, ZERO)
                for book in self._books.values()
                if book.currency == currency
            ),
            ZERO,
        )

    def _check_margin(self, book: _Book, extra_buy: Decimal, extra_sell: Decimal) -> None:
        if not extra_buy and not extra_sell:
            return
        before = self._exposure_margin(book, ZERO, ZERO)
        after = self._exposure_margin(book, extra_buy, extra_sell)
        if after <= before:
            return
        account = self.account(book.currency)
        if account.equity - (account.initial_margin - before + after) < 0:
            raise ExchangeError(NOT_ENOUGH_FUNDS)

    # --- changing and cancelling orders -----------------------------------------------------

    def _get(self, order_id: str) -> _Order:
        order = self._orders.get(order_id)
        if order is None:
            raise ExchangeError(ORDER_NOT_FOUND, data={"param": "order_id"})
        return order

    def edit(
        self,
        order_id: str,
        *,
        amount: Number | None = None,
        price: Number | None = None,
        trigger_price: Number | None = None,
        post_only: bool | None = None,
        reduce_only: bool | None = None,
    ) -> PlaceResult:
        """``private/edit``: change an order in place (flags not given are kept).

        11044 ``not_open_order`` for a closed order; editing a post-only limit so that it would
        take cancels it (``cancel_reason: "edit_post_only_reject"``), as Deribit does.
        """
        order = self._get(order_id)
        if not order.live:
            raise ExchangeError(NOT_OPEN_ORDER, data={"param": "order_id"})
        book = order.book
        spec = book.spec
        if post_only is not None and order.is_secondary and not order.active:
            raise invalid_params("post_only not allowed for secondary orders", "post_only")
        new_amount = order.amount if amount is None else to_decimal(amount, "amount")
        if amount is not None:
            self._check_amount(book, new_amount)
            if new_amount <= order.filled:
                raise ExchangeError(
                    INVALID_AMOUNT, data={"reason": "below the filled amount", "param": "amount"}
                )
        new_price = order.price
        if price is not None:
            if order.order_type in MARKET_STYLE:
                raise invalid_params("price not allowed for market orders", "price")
            new_price = to_decimal(price, "price")
            if new_price <= 0:
                raise ExchangeError(INVALID_PRICE, data={"param": "price"})
            if new_price % spec.tick_size:
                raise ExchangeError(PRICE_WRONG_TICK, data={"param": "price"})
        new_trigger = order.trigger_price
        if trigger_price is not None:
            if not order.is_trigger or order.triggered:
                raise invalid_params("not an untriggered trigger order", "trigger_price")
            new_trigger = to_decimal(trigger_price, "trigger_price")
            if new_trigger <= 0:
                raise ExchangeError(INVALID_PRICE, data={"param": "trigger_price"})
            if new_trigger % spec.tick_size:
                raise ExchangeError(STOP_PRICE_WRONG_TICK, data={"param": "trigger_price"})
            if order.active:
                self._check_live_order(
                    book,
                    order.is_buy,
                    {
                        "type": order.order_type,
                        "trigger_price": new_trigger,
                        "trigger": order.trigger,
                        "post_only": False,
                        "reduce_only": False,
                        "price": new_price,
                    },
                )
        new_reduce = order.reduce_only if reduce_only is None else bool(reduce_only)
        if order.active and not new_reduce and new_amount > order.amount:
            extra = new_amount - order.amount
            self._check_margin(
                book, extra if order.is_buy else ZERO, ZERO if order.is_buy else extra
            )

        order.amount = new_amount
        if amount is not None:
            order.target_amount = new_amount
        order.price = new_price
        order.trigger_price = new_trigger
        order.reduce_only = new_reduce
        if post_only is not None:
            order.post_only = bool(post_only)
        order.replaced = True
        order.updated = self.now_ms
        self._touch(book, order)
        trades_before = len(self._trades)
        if order.active and order in book.resting:
            order.arm()
            book.dirty = True
            if order.order_type in ("limit", "stop_limit", "take_limit") and not (
                order.is_trigger and not order.triggered
            ):
                if order.post_only and self._crosses(order, book):
                    self._close(order, "cancelled", "edit_post_only_reject")
                else:
                    self._take_if_crossing(order, book)
        self._settle(book, set())
        self._flush()
        trades = tuple(t for t in self._trades[trades_before:] if t.order_id == order.order_id)
        return PlaceResult(order.snapshot(), trades)

    def cancel(self, order_id: str) -> SimOrder:
        """``private/cancel``: 10004 if unknown, 11044 ``not_open_order`` if already closed."""
        order = self._get(order_id)
        if not order.live:
            raise ExchangeError(NOT_OPEN_ORDER, data={"param": "order_id"})
        self._close(order, "cancelled", "user_request")
        self._settle(order.book, set())
        self._flush()
        return order.snapshot()

    def _cancel_many(self, orders: list[_Order]) -> int:
        count = 0
        for order in orders:
            if order.live:
                self._close(order, "cancelled", "user_request")
                count += 1
        for book in {order.book.name: order.book for order in orders}.values():
            self._settle(book, set())
        self._flush()
        return count

    def cancel_all(self, currency: str | None = None) -> int:
        """``private/cancel_all`` (or ``cancel_all_by_currency``): how many were cancelled."""
        return self._cancel_many(
            [o for o in self._live.values() if currency in (None, o.book.currency)]
        )

    def cancel_all_by_instrument(self, instrument: str, type: str = "all") -> int:
        """``private/cancel_all_by_instrument`` with ``type`` all/limit/trigger_all/stop/take."""
        book = self._book(instrument)
        return self._cancel_many(
            [o for o in self._live.values() if o.book is book and _type_matches(o, type)]
        )

    def cancel_by_label(self, label: str, currency: str | None = None) -> int:
        """``private/cancel_by_label``: live orders with exactly this label."""
        return self._cancel_many(
            [
                o
                for o in self._labels.get(label, [])
                if o.live and currency in (None, o.book.currency)
            ]
        )

    def close_position(
        self,
        instrument: str,
        type: str = "market",
        price: Number | None = None,
    ) -> PlaceResult:
        """``private/close_position``: a reduce-only order for the whole position."""
        book = self._book(instrument)
        if not book.size:
            raise ExchangeError(ALREADY_CLOSED, data={"reason": "no position"})
        if type not in ("market", "limit"):
            raise invalid_params("invalid value", "type")
        direction = "sell" if book.size > 0 else "buy"
        return self.place_order(
            instrument, direction, abs(book.size), type=type, price=price, reduce_only=True
        )

    # --- reading ----------------------------------------------------------------------------

    def get_order(self, order_id: str) -> SimOrder:
        """``private/get_order_state`` (open or closed orders; 10004 if unknown)."""
        return self._get(order_id).snapshot()

    def orders_by_label(self, label: str, currency: str | None = None) -> list[SimOrder]:
        """``private/get_order_state_by_label``: every order with this label, oldest first."""
        return [
            o.snapshot()
            for o in self._labels.get(label, [])
            if currency in (None, "any", o.book.currency)
        ]

    def open_orders(
        self,
        instrument: str | None = None,
        *,
        currency: str | None = None,
        type: str = "all",
        label: str | None = None,
    ) -> list[SimOrder]:
        """Live orders (incl. untriggered secondaries), oldest first; ``type`` as Deribit's."""
        if type not in OPEN_ORDER_FILTERS:
            raise invalid_params("invalid value", "type")
        return [
            o.snapshot()
            for o in self._live.values()
            if (instrument is None or o.book.name == instrument)
            and currency in (None, "any", o.book.currency)
            and (label is None or o.label == label)
            and _type_matches(o, type)
        ]

    def order_history(
        self,
        instrument: str | None = None,
        *,
        include_unfilled: bool = True,
        count: int | None = None,
    ) -> list[SimOrder]:
        """Closed orders, newest first (Deribit's ``get_order_history_by_instrument``)."""
        result = [
            o.snapshot()
            for o in reversed(self._orders.values())
            if not o.live
            and (instrument is None or o.book.name == instrument)
            and (include_unfilled or o.filled > 0)
        ]
        return result if count is None else result[:count]

    def all_orders(self) -> list[SimOrder]:
        """Every order the engine has seen, oldest first (for tests and inspection)."""
        return [o.snapshot() for o in self._orders.values()]

    def trades(
        self,
        instrument: str | None = None,
        *,
        order_id: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> list[SimTrade]:
        """The account's fills, oldest first."""
        return [
            t
            for t in self._trades
            if (instrument is None or t.instrument_name == instrument)
            and (order_id is None or t.order_id == order_id)
            and (start_ms is None or t.timestamp >= start_ms)
            and (end_ms is None or t.timestamp <= end_ms)
        ]

    @property
    def trade_count(self) -> int:
        return len(self._trades)

    @property
    def open_order_count(self) -> int:
        """How many orders are live (incl. untriggered secondaries)."""
        return len(self._live)

    def _position(self, book: _Book) -> SimPosition:
        mark = Decimal(repr(book.mark))
        initial = self._exposure_margin_position(book)
        size_currency = ZERO
        if book.size and book.mark > 0:
            size_currency = book.size / mark if book.inverse else book.size
        return SimPosition(
            instrument_name=book.name,
            currency=book.currency,
            size=book.size,
            size_currency=size_currency,
            average_price=_clean(book.entry_price()) if book.size else ZERO,
            mark_price=mark,
            index_price=Decimal(repr(book.index)),
            floating_profit_loss=book.floating(),
            realized_profit_loss=book.realized,
            initial_margin=initial,
            maintenance_margin=initial * MAINTENANCE_FRACTION,
            leverage=book.spec.max_leverage,
        )

    def _exposure_margin_position(self, book: _Book) -> Decimal:
        if not book.size or book.mark <= 0:
            return ZERO
        mark = Decimal(repr(book.mark))
        size = abs(book.size)
        return (size / mark if book.inverse else size * mark) / book.spec.max_leverage

    def position(self, instrument: str) -> SimPosition:
        """``private/get_position`` (size 0 when flat)."""
        return self._position(self._book(instrument))

    def positions(
        self, currency: str | None = None, *, include_flat: bool = False
    ) -> list[SimPosition]:
        """``private/get_positions``: open positions (all instruments with ``include_flat``)."""
        return [
            self._position(book)
            for book in self._books.values()
            if currency in (None, "any", book.currency) and (include_flat or book.size)
        ]

    def account(self, currency: str) -> SimAccount:
        """``private/get_account_summary`` of one settlement currency."""
        if currency not in self._balances:
            raise invalid_params("invalid value", "currency")
        balance = self._balances[currency]
        books = [book for book in self._books.values() if book.currency == currency]
        upl = sum((book.floating() for book in books), ZERO)
        initial = sum((self._exposure_margin(book, ZERO, ZERO) for book in books), ZERO)
        initial = contract.money(initial, currency)
        equity = balance + upl
        return SimAccount(
            currency=currency,
            balance=balance,
            equity=equity,
            available_funds=equity - initial,
            initial_margin=initial,
            maintenance_margin=contract.money(initial * MAINTENANCE_FRACTION, currency),
            session_upl=upl,
            session_rpl=self._realized[currency],
            fees_paid=self._fees[currency],
        )

    def currencies(self) -> list[str]:
        return list(self._balances)

    def initial_balance(self, currency: str) -> Decimal:
        return self._initial[currency]

    def realized_pnl(self, currency: str) -> Decimal:
        """Sum of realized P&L of all fills in ``currency`` (before fees)."""
        return self._realized[currency]

    def fees_paid(self, currency: str) -> Decimal:
        return self._fees[currency]


def _prefix(currency: str) -> str:
    return "" if currency == "BTC" else f"{currency}-"


def _fault_kind_of(order_type: str, *, secondary: bool) -> str:
    if order_type.startswith("stop"):
        return "stop"
    if order_type.startswith("take"):
        return "take"
    return "secondary" if secondary else "primary"


def _fault_kind(order: _Order, *, secondary: bool) -> str:
    return _fault_kind_of(order.order_type, secondary=secondary)


def _type_matches(order: _Order, kind: str) -> bool:
    order_type = order.order_type
    if kind == "all":
        return True
    if kind == "limit":
        return order_type == "limit"
    if kind == "trigger_all":
        return order_type in TRIGGER_ORDER_TYPES
    if kind in ("stop_all", "stop"):
        return order_type.startswith("stop")
    if kind in ("take_all", "take"):
        return order_type.startswith("take")
    return order_type == kind
