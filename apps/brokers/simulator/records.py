"""Immutable snapshots the engine hands out: orders, trades, positions, accounts, tickers, changes.

Every snapshot keeps Decimals and has ``to_deribit()`` (the JSON-ready Deribit object: numbers as
int/float, Deribit's field names) and a conversion to the shared value type of
``apps.brokers.base`` (``to_order()``, ``to_fill()``, ``to_position()``, ``to_summary()``,
``to_ticker()``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from apps.brokers.base import (
    AccountSummary,
    Fill,
    Order,
    OrderState,
    Position,
    Side,
    Ticker,
)

ZERO = Decimal(0)


def num(value: Decimal | None) -> int | float | None:
    """A Decimal as the JSON number Deribit would send (int when integral)."""
    if value is None:
        return None
    if value == value.to_integral_value():
        return int(value)
    return float(value)


@dataclass(frozen=True, slots=True)
class SimOrder:
    order_id: str
    instrument_name: str
    currency: str  # settlement currency
    direction: str  # buy / sell
    order_type: str  # market, limit, stop_market, stop_limit, take_market, take_limit
    order_state: str  # open, filled, rejected, cancelled, untriggered, triggered
    amount: Decimal
    filled_amount: Decimal
    average_price: Decimal  # 0 until filled
    price: Decimal | None  # None for market-style orders ("market_price" on the wire)
    trigger_price: Decimal | None
    trigger: str | None  # last_price, mark_price, index_price
    triggered: bool | None  # None for non-trigger orders
    label: str
    time_in_force: str
    post_only: bool
    reject_post_only: bool
    reduce_only: bool
    creation_timestamp: int
    last_update_timestamp: int
    cancel_reason: str | None
    contracts: Decimal
    linked_order_type: str | None = None
    trigger_fill_condition: str | None = None
    oto_order_ids: tuple[str, ...] = ()
    oco_ref: str | None = None
    primary_order_id: str | None = None
    is_secondary_oto: bool = False
    is_primary_otoco: bool = False
    replaced: bool = False

    @property
    def is_live(self) -> bool:
        return self.order_state in ("open", "untriggered", "triggered")

    def to_deribit(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "order_id": self.order_id,
            "instrument_name": self.instrument_name,
            "direction": self.direction,
            "order_type": self.order_type,
            "order_state": self.order_state,
            "amount": num(self.amount),
            "contracts": num(self.contracts),
            "filled_amount": num(self.filled_amount),
            "average_price": num(self.average_price),
            "price": "market_price" if self.price is None else num(self.price),
            "label": self.label,
            "time_in_force": self.time_in_force,
            "post_only": self.post_only,
            "reject_post_only": self.reject_post_only,
            "reduce_only": self.reduce_only,
            "creation_timestamp": self.creation_timestamp,
            "last_update_timestamp": self.last_update_timestamp,
            "replaced": self.replaced,
            "api": True,
            "web": False,
            "is_liquidation": False,
            "risk_reducing": False,
            "mmp": False,
        }
        if self.trigger_price is not None:
            body["trigger_price"] = num(self.trigger_price)
            body["trigger"] = self.trigger
            body["triggered"] = bool(self.triggered)
        if self.cancel_reason is not None:
            body["cancel_reason"] = self.cancel_reason
        if self.trigger_fill_condition is not None:
            body["trigger_fill_condition"] = self.trigger_fill_condition
        if self.oto_order_ids:
            body["oto_order_ids"] = list(self.oto_order_ids)
        if self.is_primary_otoco:
            body["is_primary_otoco"] = True
        if self.is_secondary_oto:
            body["is_secondary_oto"] = True
        if self.primary_order_id is not None:
            body["primary_order_id"] = self.primary_order_id
        if self.oco_ref is not None:
            body["oco_ref"] = self.oco_ref
        return body

    def to_order(self) -> Order:
        return Order(
            order_id=self.order_id,
            instrument=self.instrument_name,
            direction=Side(self.direction),
            order_type=self.order_type,
            amount=self.amount,
            filled_amount=self.filled_amount,
            state=OrderState(self.order_state),
            label=self.label,
            price=self.price,
            trigger_price=self.trigger_price,
            average_price=self.average_price if self.filled_amount else None,
            reduce_only=self.reduce_only,
            primary_order_id=self.primary_order_id,
            linked_order_ids=self.oto_order_ids,
            is_secondary=self.is_secondary_oto,
            cancel_reason=self.cancel_reason,
            created_ms=self.creation_timestamp,
            updated_ms=self.last_update_timestamp,
        )


@dataclass(frozen=True, slots=True)
class SimTrade:
    trade_id: str
    trade_seq: int
    order_id: str
    instrument_name: str
    direction: str
    price: Decimal
    amount: Decimal
    fee: Decimal
    fee_currency: str
    liquidity: str  # M or T
    order_type: str
    state: str  # the order's state after this fill
    timestamp: int
    label: str
    reduce_only: bool
    post_only: bool
    profit_loss: Decimal  # realized P&L of this fill, settlement currency
    mark_price: Decimal
    index_price: Decimal
    contracts: Decimal

    def to_deribit(self) -> dict[str, Any]:
        return {
            "trade_id": self.trade_id,
            "trade_seq": self.trade_seq,
            "order_id": self.order_id,
            "instrument_name": self.instrument_name,
            "direction": self.direction,
            "price": num(self.price),
            "amount": num(self.amount),
            "contracts": num(self.contracts),
            "fee": num(self.fee),
            "fee_currency": self.fee_currency,
            "liquidity": self.liquidity,
            "order_type": self.order_type,
            "state": self.state,
            "timestamp": self.timestamp,
            "label": self.label,
            "reduce_only": self.reduce_only,
            "post_only": self.post_only,
            "profit_loss": num(self.profit_loss),
            "mark_price": num(self.mark_price),
            "index_price": num(self.index_price),
            "tick_direction": 0,
            "matching_id": None,
            "api": True,
        }

    def to_fill(self) -> Fill:
        return Fill(
            trade_id=self.trade_id,
            order_id=self.order_id,
            instrument=self.instrument_name,
            direction=Side(self.direction),
            price=self.price,
            amount=self.amount,
            fee=self.fee,
            fee_currency=self.fee_currency,
            liquidity=self.liquidity,
            label=self.label,
            timestamp_ms=self.timestamp,
        )


@dataclass(frozen=True, slots=True)
class SimPosition:
    instrument_name: str
    currency: str
    size: Decimal  # signed, amount units (USD for inverse, base coin for linear)
    size_currency: Decimal  # signed, base coin
    average_price: Decimal  # 0 when flat
    mark_price: Decimal
    index_price: Decimal
    floating_profit_loss: Decimal
    realized_profit_loss: Decimal  # cumulative since the engine started
    initial_margin: Decimal
    maintenance_margin: Decimal
    leverage: Decimal

    @property
    def direction(self) -> str:
        return "buy" if self.size > 0 else "sell" if self.size < 0 else "zero"

    def to_deribit(self) -> dict[str, Any]:
        return {
            "instrument_name": self.instrument_name,
            "kind": "future",
            "direction": self.direction,
            "size": num(self.size),
            "size_currency": num(self.size_currency),
            "average_price": num(self.average_price),
            "mark_price": num(self.mark_price),
            "index_price": num(self.index_price),
            "settlement_price": num(self.mark_price),
            "floating_profit_loss": num(self.floating_profit_loss),
            "realized_profit_loss": num(self.realized_profit_loss),
            "total_profit_loss": num(self.floating_profit_loss + self.realized_profit_loss),
            "initial_margin": num(self.initial_margin),
            "maintenance_margin": num(self.maintenance_margin),
            "open_orders_margin": 0,
            "leverage": num(self.leverage),
            "delta": num(self.size_currency),
            "estimated_liquidation_price": None,
            "realized_funding": 0,
            "interest_value": 0,
        }

    def to_position(self) -> Position:
        return Position(
            instrument=self.instrument_name,
            size=self.size,
            average_price=self.average_price,
            mark_price=self.mark_price,
            floating_pnl=self.floating_profit_loss,
            realized_pnl=self.realized_profit_loss,
        )


@dataclass(frozen=True, slots=True)
class SimAccount:
    currency: str
    balance: Decimal  # initial + realized P&L - fees
    equity: Decimal  # balance + floating P&L
    available_funds: Decimal  # equity - initial margin (positions and open orders)
    initial_margin: Decimal
    maintenance_margin: Decimal
    session_upl: Decimal
    session_rpl: Decimal
    fees_paid: Decimal

    def to_deribit(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "balance": num(self.balance),
            "equity": num(self.equity),
            "margin_balance": num(self.equity),
            "available_funds": num(self.available_funds),
            "available_withdrawal_funds": num(max(ZERO, self.available_funds)),
            "initial_margin": num(self.initial_margin),
            "maintenance_margin": num(self.maintenance_margin),
            "projected_initial_margin": num(self.initial_margin),
            "projected_maintenance_margin": num(self.maintenance_margin),
            "session_upl": num(self.session_upl),
            "session_rpl": num(self.session_rpl),
            "total_pl": num(self.session_upl + self.session_rpl),
            "futures_pl": num(self.session_upl + self.session_rpl),
            "futures_session_upl": num(self.session_upl),
            "futures_session_rpl": num(self.session_rpl),
            "fee_balance": 0,
            "delta_total": 0,
            "margin_model": "segregated_sm",
            "portfolio_margining_enabled": False,
            "cross_collateral_enabled": False,
        }

    def to_summary(self) -> AccountSummary:
        return AccountSummary(
            currency=self.currency,
            balance=self.balance,
            equity=self.equity,
            available_funds=self.available_funds,
            initial_margin=self.initial_margin,
            maintenance_margin=self.maintenance_margin,
        )


@dataclass(frozen=True, slots=True)
class SimTicker:
    instrument_name: str
    last_price: Decimal
    mark_price: Decimal
    index_price: Decimal
    best_bid_price: Decimal
    best_ask_price: Decimal
    timestamp: int

    def to_deribit(self) -> dict[str, Any]:
        return {
            "instrument_name": self.instrument_name,
            "last_price": num(self.last_price),
            "mark_price": num(self.mark_price),
            "index_price": num(self.index_price),
            "best_bid_price": num(self.best_bid_price),
            "best_ask_price": num(self.best_ask_price),
            "best_bid_amount": 0,
            "best_ask_amount": 0,
            "timestamp": self.timestamp,
            "state": "open",
            "current_funding": 0,
            "funding_8h": 0,
            "open_interest": 0,
        }

    def to_ticker(self) -> Ticker:
        return Ticker(
            instrument=self.instrument_name,
            last_price=self.last_price,
            mark_price=self.mark_price,
            index_price=self.index_price,
            best_bid=self.best_bid_price,
            best_ask=self.best_ask_price,
            timestamp_ms=self.timestamp,
        )


@dataclass(frozen=True, slots=True)
class Changes:
    """One atomic change of the account on one instrument (a placement, a cancel, a trigger...).

    ``orders``: every order whose state changed, after the change; ``trades``: the fills made;
    ``positions``: the instrument's position after the change (empty when it did not change).
    This is Deribit's ``user.changes.{instrument}`` payload; ``user.orders`` gets each order,
    ``user.trades`` the trades and ``user.portfolio.{currency}`` the account after it.
    """

    instrument_name: str
    currency: str
    orders: tuple[SimOrder, ...]
    trades: tuple[SimTrade, ...]
    positions: tuple[SimPosition, ...]
    timestamp: int

    def to_deribit(self) -> dict[str, Any]:
        return {
            "instrument_name": self.instrument_name,
            "orders": [order.to_deribit() for order in self.orders],
            "trades": [trade.to_deribit() for trade in self.trades],
            "positions": [position.to_deribit() for position in self.positions],
        }


@dataclass(frozen=True, slots=True)
class PlaceResult:
    """Answer of buy/sell/edit/close_position: the (primary) order and the fills it made now."""

    order: SimOrder
    trades: tuple[SimTrade, ...]

    def to_deribit(self) -> dict[str, Any]:
        return {
            "order": self.order.to_deribit(),
            "trades": [trade.to_deribit() for trade in self.trades],
        }
