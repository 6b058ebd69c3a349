"""The engine's reads: orders, trades, positions, accounts and margins.

``AccountReads`` is a base class of ``ExchangeEngine``. Margins: the exposure of an instrument is
max(|position + open buys|, |position − open sells|) valued at the mark, open orders counting
unless reduce-only or not yet activated; initial margin = exposure / max_leverage; maintenance
margin = half of it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from decimal import Decimal

from . import contract
from .book import Book
from .errors import NOT_ENOUGH_FUNDS, ExchangeError, invalid_params
from .matching import MatchingCore
from .orders import OPEN_ORDER_FILTERS, ZERO, clean_price, type_matches
from .records import SimAccount, SimOrder, SimPosition, SimTrade

MAINTENANCE_FRACTION = Decimal("0.5")


class AccountReads(MatchingCore):
    """Reads and margin arithmetic over the engine's state."""

    def _exposure_margin(self, book: Book, extra_buy: Decimal, extra_sell: Decimal) -> Decimal:
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

    def _check_margin(self, book: Book, extra_buy: Decimal, extra_sell: Decimal) -> None:
        if not extra_buy and not extra_sell:
            return
        before = self._exposure_margin(book, ZERO, ZERO)
        after = self._exposure_margin(book, extra_buy, extra_sell)
        if after <= before:
            return
        account = self.account(book.currency)
        if account.equity - (account.initial_margin - before + after) < 0:
            raise ExchangeError(NOT_ENOUGH_FUNDS)

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
            and type_matches(o, type)
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
        """The account's fills, oldest first (indexed: cheap however many there are)."""
        if order_id is not None:
            source = self._trades_by_order.get(order_id, [])
            if instrument is not None:
                source = [t for t in source if t.instrument_name == instrument]
        elif instrument is not None:
            source = self._trades_by_instrument.get(instrument, [])
        else:
            source = self._trades
        if start_ms is None and end_ms is None:
            return list(source)
        if self._trades_in_time_order:
            low = 0 if start_ms is None else bisect_left(source, start_ms, key=_timestamp)
            high = len(source) if end_ms is None else bisect_right(source, end_ms, key=_timestamp)
            return source[low:high]
        return [
            t
            for t in source
            if (start_ms is None or t.timestamp >= start_ms)
            and (end_ms is None or t.timestamp <= end_ms)
        ]

    @property
    def trade_count(self) -> int:
        return len(self._trades)

    @property
    def open_order_count(self) -> int:
        """How many orders are live (incl. untriggered secondaries)."""
        return len(self._live)

    def _position(self, book: Book) -> SimPosition:
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
            average_price=clean_price(book.entry_price()) if book.size else ZERO,
            mark_price=mark,
            index_price=Decimal(repr(book.index)),
            floating_profit_loss=book.floating(),
            realized_profit_loss=book.realized,
            initial_margin=initial,
            maintenance_margin=initial * MAINTENANCE_FRACTION,
            leverage=book.spec.max_leverage,
        )

    def _exposure_margin_position(self, book: Book) -> Decimal:
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


def _timestamp(trade: SimTrade) -> int:
    return trade.timestamp
