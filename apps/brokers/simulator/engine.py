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
- ``good_til_day`` is kept as given but acts as ``good_til_cancelled``; there is no price band.
  Trigger orders per instrument are uncapped unless ``max_trigger_orders`` is given (then one
  more is refused with 11035 ``no_more_triggers``, counting untriggered secondaries).

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

Where the code is: this module has the public API (prices, replays, placing, editing,
cancelling); ``reads.py`` the reads and margins; ``matching.py`` the matching core and linked
orders; ``book.py`` an instrument's book; ``orders.py`` the working order; ``validation.py`` the
parameter checks; ``records.py`` the snapshots callers get.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from apps.brokers.base import Candle, InstrumentSpec

from .book import Book, intra_candle_path
from .errors import (
    ALREADY_CLOSED,
    INVALID_AMOUNT,
    INVALID_INSTRUMENT,
    INVALID_PRICE,
    NO_MORE_TRIGGERS,
    NOT_OPEN_ORDER,
    ORDER_NOT_FOUND,
    PRICE_WRONG_TICK,
    STOP_PRICE_WRONG_TICK,
    ExchangeError,
    invalid_params,
)
from .faults import EngineFaults
from .instruments import DEFAULT_BALANCES, default_specs
from .matching import Listener
from .orders import (
    FILL_CONDITIONS,
    LINKED_ORDER_TYPES,
    MARKET_STYLE,
    OCO,
    OTOCO,
    ZERO,
    Number,
    WorkingOrder,
    fault_kind_of,
    id_prefix,
    to_decimal,
    type_matches,
)
from .reads import AccountReads
from .records import PlaceResult, SimOrder, SimTicker
from .validation import check_amount, check_live_order, validate_config, validate_order

__all__ = ["ExchangeEngine", "intra_candle_path"]


class ExchangeEngine(AccountReads):
    """A simulated Deribit account and matching engine over a set of instruments.

    ``specs``: instrument table (default ``instruments.default_specs()``); ``balances``: starting
    balance per settlement currency (default 1 BTC, 10 ETH, 100,000 USDC); ``prices``: starting
    price per instrument (orders on an instrument without a price are refused with 10012
    ``book_closed``); ``slippage_ticks``: how many ticks worse market-style fills are;
    ``max_trigger_orders``: per instrument, the most live stop/take orders (None: no cap);
    ``fill_cap``: per instrument, the most a resting limit order fills per price event.
    """

    def __init__(
        self,
        specs: Mapping[str, InstrumentSpec] | None = None,
        balances: Mapping[str, Number] | None = None,
        *,
        prices: Mapping[str, float] | None = None,
        slippage_ticks: int = 0,
        max_trigger_orders: int | None = None,
        fill_cap: Mapping[str, Number] | None = None,
        now_ms: int | None = None,
    ) -> None:
        self.specs: dict[str, InstrumentSpec] = dict(specs or default_specs())
        self._books: dict[str, Book] = {name: Book(spec) for name, spec in self.specs.items()}
        start = DEFAULT_BALANCES if balances is None else balances
        currencies = {book.currency for book in self._books.values()}
        self._initial: dict[str, Decimal] = {c: ZERO for c in currencies}
        for currency, amount in start.items():
            self._initial[currency] = to_decimal(amount, "balance")
        self._balances = dict(self._initial)
        self._realized: dict[str, Decimal] = {c: ZERO for c in self._initial}
        self._fees: dict[str, Decimal] = {c: ZERO for c in self._initial}
        self.slippage_ticks = slippage_ticks
        self.max_trigger_orders = max_trigger_orders
        self.fill_cap: dict[str, Decimal] = {
            name: to_decimal(cap, "fill_cap") for name, cap in (fill_cap or {}).items()
        }
        self.now_ms: int = int(time.time() * 1000) if now_ms is None else now_ms
        self.faults = EngineFaults()
        self.version = 0  # +1 on every account change (order, fill, position)
        self._orders: dict[str, WorkingOrder] = {}
        self._live: dict[str, WorkingOrder] = {}
        self._labels: dict[str, list[WorkingOrder]] = {}
        self._trades = []
        self._trades_by_order = {}
        self._trades_by_instrument = {}
        self._trades_in_time_order = True
        self._listeners: list[Listener] = []
        self._pending = {}
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

    # --- instruments and prices -------------------------------------------------------------

    def _book(self, instrument: str) -> Book:
        book = self._books.get(instrument)
        if book is None:
            raise self._unknown(instrument)
        return book

    @staticmethod
    def _unknown(instrument: str) -> ExchangeError:
        return ExchangeError(
            INVALID_INSTRUMENT,
            data={"reason": f"unknown instrument {instrument}", "param": "instrument_name"},
        )

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
        try:
            book = self._books[instrument]
        except KeyError:
            raise self._unknown(instrument) from None
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
        book: Book,
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
        fields = validate_order(
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
                configs.append(validate_config(book, raw, fields, is_buy, linked_order_type))
        elif otoco_config:
            raise invalid_params("value is required", "linked_order_type")
        if book.last <= 0:
            raise ExchangeError(10012, "book_closed", {"reason": "no price yet"})
        check_live_order(book, is_buy, fields)
        if linked_order_type == OCO:
            for config_is_buy, config in configs:
                check_live_order(book, config_is_buy, config)
        if self.max_trigger_orders is not None:
            new = [fields] + [config for _, config in configs]
            adding = sum(1 for f in new if f["trigger_price"] is not None)
            live = sum(1 for o in self._live.values() if o.book is book and o.is_trigger)
            if adding and live + adding > self.max_trigger_orders:
                raise ExchangeError(NO_MORE_TRIGGERS, f"no_more_triggers {self.max_trigger_orders}")
        rejection = self.faults.take_rejection(fault_kind_of(fields["type"], secondary=False))
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
                oco_ref = f"{id_prefix(book.currency)}OCO-{self._oco_seq}"
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

    def _start(self, order: WorkingOrder, book: Book) -> None:
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
        self, book: Book, is_buy: bool, fields: dict[str, Any], *, secondary: bool
    ) -> WorkingOrder:
        self._order_seq += 1
        prefix = id_prefix(book.currency)
        order_id = f"{prefix}OTO-{self._order_seq}" if secondary else f"{prefix}{self._order_seq}"
        order = WorkingOrder(book, order_id, self._order_seq, is_buy, fields)
        order.created = order.updated = self.now_ms
        if order.is_trigger:
            order.state = "untriggered"
        return order

    def _register(self, order: WorkingOrder) -> None:
        self._orders[order.order_id] = order
        self._live[order.order_id] = order
        if order.label:
            self._labels.setdefault(order.label, []).append(order)
        self._touch(order.book, order)

    # --- changing and cancelling orders -----------------------------------------------------

    def _get(self, order_id: str) -> WorkingOrder:
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
            check_amount(book, new_amount)
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
                check_live_order(
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

    def cancel(self, order_id: str, *, reason: str = "user_request") -> SimOrder:
        """``private/cancel``: 10004 if unknown, 11044 ``not_open_order`` if already closed.

        ``reason`` becomes the order's ``cancel_reason`` (e.g. ``cancel_on_disconnect``)."""
        order = self._get(order_id)
        if not order.live:
            raise ExchangeError(NOT_OPEN_ORDER, data={"param": "order_id"})
        self._close(order, "cancelled", reason)
        self._settle(order.book, set())
        self._flush()
        return order.snapshot()

    def _cancel_many(self, orders: list[WorkingOrder]) -> int:
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
            [o for o in self._live.values() if o.book is book and type_matches(o, type)]
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
