"""The matching core of the engine: price moves, triggers, fills, linked orders, events.

``MatchingCore`` is the base class of ``ExchangeEngine``; it holds the state every part of the
engine shares and the code that changes it when the price moves or an order goes to work. The
public API (placing, editing, reading) is in ``engine.py`` and ``reads.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal

from apps.brokers.base import InstrumentSpec

from . import contract
from .book import Book
from .faults import EngineFaults
from .orders import MARKET_STYLE, OTO, OTOCO, ZERO, WorkingOrder, id_prefix, order_fault_kind
from .records import Changes, SimPosition, SimTrade

logger = logging.getLogger(__name__)

Listener = Callable[[Changes], None]


class _Pending:
    __slots__ = ("orders", "position", "trades")

    def __init__(self) -> None:
        self.orders: dict[str, WorkingOrder] = {}
        self.trades: list[SimTrade] = []
        self.position = False


class MatchingCore:
    """Shared state (set by ``ExchangeEngine.__init__``) and the matching code."""

    specs: dict[str, InstrumentSpec]
    _books: dict[str, Book]
    _initial: dict[str, Decimal]
    _balances: dict[str, Decimal]
    _realized: dict[str, Decimal]
    _fees: dict[str, Decimal]
    slippage_ticks: int
    fill_cap: dict[str, Decimal]
    now_ms: int
    faults: EngineFaults
    version: int
    _orders: dict[str, WorkingOrder]
    _live: dict[str, WorkingOrder]
    _labels: dict[str, list[WorkingOrder]]
    _trades: list[SimTrade]
    _trades_by_order: dict[str, list[SimTrade]]
    _trades_by_instrument: dict[str, list[SimTrade]]
    _trades_in_time_order: bool
    _listeners: list[Listener]
    _pending: dict[str, _Pending]
    _order_seq: int
    _trade_seq: int
    _oco_seq: int
    _price_event: int

    def _position(self, book: Book) -> SimPosition:
        raise NotImplementedError

    # --- events -----------------------------------------------------------------------------

    def _touch(self, book: Book, order: WorkingOrder | None = None, position: bool = False) -> None:
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

    # --- the matching core ------------------------------------------------------------------

    def _move(self, book: Book, target: float, *, gap: bool) -> None:
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
            best: WorkingOrder | None = None
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

    def _settle(self, book: Book, done: set[str]) -> None:
        """Fire / fill every order the current prices have reached, nearest first."""
        while True:
            if book.dirty:
                book.recompute()
            last = book.last
            if last <= 0 or (not book.split and book.down < last < book.up):
                return
            best: WorkingOrder | None = None
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

    def _execute_resting(self, order: WorkingOrder, book: Book, *, exact: bool) -> None:
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

    def _slipped(self, book: Book, price: Decimal, is_buy: bool) -> Decimal:
        if not self.slippage_ticks:
            return price
        shift = book.tick * self.slippage_ticks
        slipped = price + shift if is_buy else price - shift
        return slipped if slipped > 0 else book.tick

    def _crosses(self, order: WorkingOrder, book: Book) -> bool:
        assert order.price is not None
        last = book.last
        return float(order.price) >= last if order.is_buy else float(order.price) <= last

    def _take_if_crossing(self, order: WorkingOrder, book: Book) -> None:
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

    def _take_market(self, order: WorkingOrder, book: Book, price: Decimal) -> None:
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

    def _fill(
        self, order: WorkingOrder, book: Book, amount: Decimal, price: Decimal, *, maker: bool
    ):
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
            trade_id=f"{id_prefix(currency)}{self._trade_seq}",
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
        trades = self._trades
        if trades and trades[-1].timestamp > trade.timestamp:
            self._trades_in_time_order = False
        trades.append(trade)
        self._trades_by_order.setdefault(order.order_id, []).append(trade)
        self._trades_by_instrument.setdefault(book.name, []).append(trade)
        self._touch(book, order, position=True)
        if self._listeners:
            self._pending[book.name].trades.append(trade)
        self._after_fill(order, book, amount)
        return trade

    # --- linked orders ----------------------------------------------------------------------

    def _after_fill(self, order: WorkingOrder, book: Book, amount: Decimal) -> None:
        if order.oto_ids and order.linked_order_type in (OTO, OTOCO):
            self._activate_secondaries(order, closing=False)
        if order.oco_ref is not None and order.active:
            self._oco_fill(order, book, amount)

    def _activate_secondaries(self, primary: WorkingOrder, *, closing: bool) -> None:
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
            elif want - secondary.oco_cut > secondary.amount:
                secondary.amount = want - secondary.oco_cut
                secondary.updated = self.now_ms
                self._touch(secondary.book, secondary)

    def _activate(self, order: WorkingOrder, amount: Decimal) -> None:
        book = order.book
        order.active = True
        order.amount = amount
        order.updated = self.now_ms
        rejection = self.faults.take_rejection(order_fault_kind(order, secondary=True))
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

    def _oco_fill(self, order: WorkingOrder, book: Book, amount: Decimal) -> None:
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
                sibling.oco_cut += cut * step
                if sibling.amount <= sibling.filled:
                    self._close(sibling, "cancelled", "oco_other_closed", cascade=False)
                else:
                    sibling.updated = self.now_ms
                    self._touch(book, sibling)

    def _oco_siblings(self, order: WorkingOrder) -> list[WorkingOrder]:
        ref = order.oco_ref
        return [
            other
            for other in self._live.values()
            if other.oco_ref == ref and other is not order and other.live
        ]

    def _unlist(self, order: WorkingOrder) -> None:
        self._live.pop(order.order_id, None)
        book = order.book
        if order in book.resting:
            book.resting.remove(order)
            book.dirty = True

    def _close(
        self, order: WorkingOrder, state: str, reason: str | None, *, cascade: bool = True
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
