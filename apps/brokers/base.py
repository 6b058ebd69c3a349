"""The Broker protocol every adapter implements (Deribit, ccxt, paper) and its value types.

Pure Python: no Django. Money and amounts are ``Decimal``; candle prices are floats because
indicator math runs on them, and a price that becomes an order is rounded to the tick as a
``Decimal`` first.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable


class InstrumentKind(enum.StrEnum):
    INVERSE = "inverse"  # Deribit "reversed": amount in USD, P&L in the coin
    LINEAR = "linear"  # amount in the base coin, P&L in the quote (USDC)


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderState(enum.StrEnum):
    """Deribit's order states; a partly filled order stays OPEN."""

    OPEN = "open"
    FILLED = "filled"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    UNTRIGGERED = "untriggered"
    TRIGGERED = "triggered"

    @property
    def is_live(self) -> bool:
        return self in (OrderState.OPEN, OrderState.UNTRIGGERED, OrderState.TRIGGERED)


class ConnectionState(enum.StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    name: str
    kind: InstrumentKind
    base_currency: str
    quote_currency: str
    settlement_currency: str
    contract_size: Decimal
    min_amount: Decimal
    amount_step: Decimal
    tick_size: Decimal
    max_leverage: Decimal
    maker_fee: Decimal = Decimal("0")
    taker_fee: Decimal = Decimal("0.0005")

    @property
    def is_inverse(self) -> bool:
        return self.kind is InstrumentKind.INVERSE


@dataclass(frozen=True, slots=True)
class Candle:
    """One candle keyed by its open time in milliseconds since the epoch (UTC)."""

    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0


@dataclass(frozen=True, slots=True)
class Ticker:
    instrument: str
    last_price: Decimal
    mark_price: Decimal
    index_price: Decimal
    best_bid: Decimal | None
    best_ask: Decimal | None
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class AccountSummary:
    currency: str
    balance: Decimal
    equity: Decimal
    available_funds: Decimal
    initial_margin: Decimal = Decimal("0")
    maintenance_margin: Decimal = Decimal("0")


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    instrument: str
    direction: Side
    order_type: str  # market, limit, stop_market, stop_limit, take_market, take_limit
    amount: Decimal
    filled_amount: Decimal
    state: OrderState
    label: str = ""
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    average_price: Decimal | None = None
    reduce_only: bool = False
    primary_order_id: str | None = None  # set on a linked secondary (stop / take-profit)
    linked_order_ids: tuple[str, ...] = ()  # on a primary: its secondaries (Deribit oto_order_ids)
    is_secondary: bool = False
    cancel_reason: str | None = None
    created_ms: int = 0
    updated_ms: int = 0

    @property
    def is_live(self) -> bool:
        return self.state.is_live


@dataclass(frozen=True, slots=True)
class Fill:
    trade_id: str
    order_id: str
    instrument: str
    direction: Side
    price: Decimal
    amount: Decimal
    fee: Decimal
    fee_currency: str
    liquidity: str  # "M" maker or "T" taker
    label: str
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Position:
    instrument: str
    size: Decimal  # signed: positive long, negative short, in the instrument's amount unit
    average_price: Decimal
    mark_price: Decimal
    floating_pnl: Decimal
    realized_pnl: Decimal

    @property
    def side(self) -> Side | None:
        if self.size > 0:
            return Side.BUY
        if self.size < 0:
            return Side.SELL
        return None


def bracket_labels(bracket_id: str) -> tuple[str, str, str]:
    """Labels of a bracket's legs: entry, stop-loss, take-profit. All start with ``tb-{id}``.

    Deribit caps labels at 64 characters; a bracket id is at most 40.
    """
    if not bracket_id or len(bracket_id) > 40:
        raise ValueError("bracket_id must be 1..40 characters")
    prefix = f"{LABEL_PREFIX}{bracket_id}"
    return f"{prefix}-entry", f"{prefix}-sl", f"{prefix}-tp"


LABEL_PREFIX = "tb-"


def bracket_id_of_label(label: str) -> str | None:
    """The bracket id a label names, or None if the label is not one of ours."""
    if not label.startswith(LABEL_PREFIX):
        return None
    stem, _, leg = label.rpartition("-")
    if leg not in ("entry", "sl", "tp") or len(stem) <= len(LABEL_PREFIX):
        return None
    return stem[len(LABEL_PREFIX) :]


@dataclass(frozen=True, slots=True)
class BracketRequest:
    """Entry + stop-loss + take-profit as one linked set. Prices are already on the tick."""

    bracket_id: str
    instrument: str
    side: Side
    amount: Decimal
    stop_price: Decimal
    take_profit_price: Decimal
    entry_type: str = "market"  # market or limit
    entry_price: Decimal | None = None
    trigger: str = "mark_price"  # what the stop triggers on
    # when its intent was fired (wall clock, ms; apps/orders/armed.py): the request expires
    # that long after this moment, not after it left, so a crash's reconcile knows when
    valid_from_ms: int | None = None

    @property
    def labels(self) -> tuple[str, str, str]:
        return bracket_labels(self.bracket_id)


@dataclass(frozen=True, slots=True)
class BracketResult:
    entry: Order
    stop_loss: Order
    take_profit: Order
    # time.perf_counter() when the exchange acknowledged the placement request (before the
    # legs were read back); None when the broker does not tell
    acked_at: float | None = None


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A single order, for brokers without exchange-linked orders (the bracket service emulates)."""

    instrument: str
    side: Side
    amount: Decimal
    order_type: str = "market"
    label: str = ""
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    trigger: str | None = None
    reduce_only: bool = False


class EventKind(enum.StrEnum):
    ORDER = "order"  # an order changed (payload: Order)
    FILL = "fill"  # a fill happened (payload: Fill)
    POSITION = "position"  # a position changed (payload: Position)
    CANDLE = "candle"  # a candle closed (payload: Candle)
    DISCONNECTED = "disconnected"  # the connection was lost (payload: reason str)
    RECONNECTED = "reconnected"  # auto-reconnect succeeded (payload: attempt count)


@dataclass(frozen=True, slots=True)
class BrokerEvent:
    kind: EventKind
    payload: Any = None
    timestamp_ms: int = 0


# --- errors -------------------------------------------------------------------------------


class BrokerError(Exception):
    """An error answered by the broker, with its own code, message and data kept."""

    def __init__(self, message: str, *, code: int | str | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def __str__(self) -> str:
        extra = f" {self.data}" if self.data else ""
        return f"[{self.code}] {self.message}{extra}" if self.code is not None else self.message


class AuthenticationFailed(BrokerError):
    """Credentials refused."""


class ConnectionLost(BrokerError):
    """The connection dropped or is not open. No request can be sent."""


class OrderOutcomeUnknown(BrokerError):
    """A request that may have changed state timed out or lost its socket: look it up by label."""


class OrderRejected(BrokerError):
    """The exchange refused the order (funds, size, price, ...)."""


class RetryableError(BrokerError):
    """Rate limit, busy engine, maintenance: safe to retry later with back-off."""


class NotFound(BrokerError):
    """The order or instrument does not exist."""


@runtime_checkable
class Broker(Protocol):
    """What the runner, the bracket service and the pages need from any broker.

    ``supports_linked_orders`` says whether ``place_bracket`` is one exchange-linked request
    (Deribit OTOCO, paper). Brokers without it leave the emulation to the bracket service,
    which uses ``place_order`` and ``cancel``.
    """

    broker_id: str
    supports_linked_orders: bool

    @property
    def state(self) -> ConnectionState: ...

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    async def account_summary(self, currency: str) -> AccountSummary: ...

    async def instruments(self) -> list[InstrumentSpec]: ...

    async def instrument(self, name: str) -> InstrumentSpec: ...

    async def ticker(self, instrument: str) -> Ticker: ...

    async def candles(
        self, instrument: str, resolution_minutes: int, start_ms: int, end_ms: int
    ) -> list[Candle]: ...

    def closed_candles(self, instrument: str, resolution_minutes: int) -> AsyncIterator[Candle]: ...

    async def place_bracket(self, request: BracketRequest) -> BracketResult: ...

    async def place_order(self, request: OrderRequest) -> Order: ...

    async def cancel(self, order_id: str) -> Order: ...

    async def open_orders(
        self, instrument: str | None = None, label_prefix: str | None = None
    ) -> list[Order]: ...

    async def order_state(self, order_id: str) -> Order: ...

    async def orders_by_label(self, label: str, currency: str) -> list[Order]: ...

    async def positions(self, currency: str | None = None) -> list[Position]: ...

    async def close_position(self, instrument: str) -> Order | None: ...

    async def fills(self, instrument: str, since_ms: int = 0) -> list[Fill]: ...

    def events(self) -> AsyncIterator[BrokerEvent]: ...


@dataclass(slots=True)
class BrokerInfo:
    """One entry of the broker registry."""

    id: str
    name: str
    logo: str  # static path of an SVG
    testnet: bool
    kinds: tuple[str, ...]  # spot, futures, perpetuals, options
    linked_orders: bool
    max_leverage: int
    adapter: str  # dotted path of the adapter class
    ccxt_id: str | None = None
    docs_url: str = ""
    example_pairs: tuple[str, ...] = field(default_factory=tuple)
