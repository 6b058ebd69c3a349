"""CcxtBroker: the Broker protocol over ccxt's async API, for the 14 exchanges without a native
adapter (and, in tests, for ccxt's own ``deribit`` class pointed at the simulator).

No exchange-linked orders here (``supports_linked_orders = False``): the bracket service places
the entry, then the reduce-only stop and take-profit, with ``place_order`` and verifies them.
Sandbox mode is switched on for ``testnet=True`` where ccxt knows the exchange's sandbox URL;
where it does not, building the broker fails with a clear message instead of trading live.

Amounts are in ccxt's unit for the market (contracts for most derivatives; Deribit's own unit,
USD for inverse perpetuals, for ``deribit``), and the specs ``instruments()`` returns use the same
unit, so sizing stays consistent. Instruments are named by the exchange's market id
(``BTC-PERPETUAL``); a ccxt unified symbol (``BTC/USD:BTC``) is accepted as well.

ccxt errors become our typed errors; their text is scrubbed of the API key and secret.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async

from apps.brokers.base import (
    AccountSummary,
    AuthenticationFailed,
    BracketRequest,
    BracketResult,
    BrokerError,
    BrokerEvent,
    Candle,
    ConnectionLost,
    ConnectionState,
    EventKind,
    Fill,
    InstrumentKind,
    InstrumentSpec,
    NotFound,
    Order,
    OrderOutcomeUnknown,
    OrderRejected,
    OrderRequest,
    OrderState,
    Position,
    RetryableError,
    Side,
    Ticker,
)
from apps.brokers.registry import get_broker_info

_STATUS = {
    "open": OrderState.OPEN,
    "closed": OrderState.FILLED,
    "canceled": OrderState.CANCELLED,
    "cancelled": OrderState.CANCELLED,
    "expired": OrderState.CANCELLED,
    "rejected": OrderState.REJECTED,
}
_TIMEFRAMES = {1: "1m", 3: "3m", 5: "5m", 15: "15m", 30: "30m", 60: "1h", 240: "4h", 1440: "1d"}


def _dec(value: Any, default: str | None = "0") -> Decimal | None:
    if value is None or value == "":
        return None if default is None else Decimal(default)
    return Decimal(str(value))


def _now_ms() -> int:
    return int(time.time() * 1000)


class CcxtBroker:
    supports_linked_orders = False

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        broker_id: str,
        ccxt_id: str | None = None,
        testnet: bool = False,
        api_url: str | None = None,
        options: dict[str, Any] | None = None,
        poll_interval: float = 2.0,
    ) -> None:
        info = get_broker_info(broker_id)
        self.broker_id = broker_id
        self.info = info
        self.ccxt_id = ccxt_id or info.ccxt_id
        exchange_class = getattr(ccxt_async, self.ccxt_id or "", None)
        if exchange_class is None:
            raise ValueError(
                f"The installed ccxt ({ccxt.__version__}) has no exchange {self.ccxt_id!r} "
                f"for {info.name}."
            )
        self._secrets = tuple(s for s in (api_key, api_secret) if s)
        self._config = {
            "apiKey": api_key,
            "secret": api_secret,
            "enableRateLimit": True,
            "options": options or {},
        }
        self._exchange_class = exchange_class
        self.testnet = testnet
        self.api_url = api_url
        if testnet and not api_url and not exchange_class().urls.get("test"):
            raise ValueError(f"{info.name} has no sandbox in ccxt; testnet is not possible.")
        self.exchange = self._new_exchange()
        self.poll_interval = poll_interval
        self._state = ConnectionState.DISCONNECTED
        self._closed = False
        self._symbols: dict[str, str] = {}  # order id -> ccxt symbol (cancel needs it)
        self._event_queues: set[asyncio.Queue[BrokerEvent]] = set()

    def _new_exchange(self) -> Any:
        """A fresh ccxt instance (a closed one refuses every request)."""
        exchange = self._exchange_class(dict(self._config))
        if self.testnet and not self.api_url:
            exchange.set_sandbox_mode(True)
        if self.api_url:
            exchange.urls["api"] = _replace_urls(exchange.urls["api"], self.api_url)
        return exchange

    def __repr__(self) -> str:
        return f"CcxtBroker({self.ccxt_id}, testnet={self.testnet}, state={self._state.value})"

    # --- errors -------------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "****")
        return text[:500]

    def _translate(self, exc: Exception, *, placing: bool = False) -> BrokerError:
        message = self._scrub(str(exc)) or type(exc).__name__
        code = type(exc).__name__
        if isinstance(exc, ccxt.AuthenticationError | ccxt.PermissionDenied):
            return AuthenticationFailed(message, code=code)
        if isinstance(exc, ccxt.OrderNotFound | ccxt.BadSymbol):
            return NotFound(message, code=code)
        if isinstance(exc, ccxt.InsufficientFunds | ccxt.InvalidOrder):
            return OrderRejected(message, code=code)
        if isinstance(exc, ccxt.RequestTimeout) and placing:
            return OrderOutcomeUnknown(message, code=code)
        if isinstance(
            exc,
            ccxt.RateLimitExceeded | ccxt.DDoSProtection | ccxt.OnMaintenance,
        ):
            return RetryableError(message, code=code)
        if isinstance(exc, ccxt.NetworkError):
            if placing:
                return OrderOutcomeUnknown(message, code=code)
            return ConnectionLost(message, code=code)
        if isinstance(exc, ccxt.BaseError):
            return BrokerError(message, code=code)
        if isinstance(exc, OSError | asyncio.TimeoutError):
            if placing:
                return OrderOutcomeUnknown(message, code=code)
            return ConnectionLost(message, code=code)
        raise exc

    async def _call(self, name: str, *args: Any, placing: bool = False, **kwargs: Any) -> Any:
        try:
            return await getattr(self.exchange, name)(*args, **kwargs)
        except BrokerError:
            raise
        except Exception as exc:
            raise self._translate(exc, placing=placing) from None

    # --- connection ---------------------------------------------------------------------------
    @property
    def state(self) -> ConnectionState:
        return self._state

    async def connect(self) -> None:
        """Load the markets and prove the credentials with one private read (the balance)."""
        if self._closed:
            self.exchange = self._new_exchange()
            self._closed = False
        self._state = ConnectionState.CONNECTING
        try:
            await self._call("load_markets")
            await self._call("fetch_balance", self._balance_params(None))
        except BrokerError:
            self._state = ConnectionState.ERROR
            await self._close_quietly()
            raise
        self._state = ConnectionState.CONNECTED

    async def disconnect(self) -> None:
        await self._close_quietly()
        self._state = ConnectionState.DISCONNECTED
        for queue in self._event_queues:
            queue.put_nowait(BrokerEvent(EventKind.DISCONNECTED, "disconnect requested", _now_ms()))

    async def _close_quietly(self) -> None:
        self._closed = True
        try:
            await self.exchange.close()
        except Exception:  # closing must not hide the error that brought us here
            return

    # --- markets ------------------------------------------------------------------------------
    def _symbol(self, instrument: str) -> str:
        markets = self.exchange.markets or {}
        if instrument in markets:
            return instrument
        by_id = self.exchange.markets_by_id or {}
        if instrument in by_id:
            entry = by_id[instrument]
            return (entry[0] if isinstance(entry, list) else entry)["symbol"]
        raise NotFound(f"unknown instrument {instrument!r}", code="BadSymbol")

    def _market_id(self, symbol: str | None) -> str:
        if not symbol:
            return ""
        market = (self.exchange.markets or {}).get(symbol)
        return market["id"] if market else symbol

    def _step(self, value: Any) -> Decimal:
        if value is None:
            return Decimal("0")
        if self.exchange.precisionMode == ccxt.DECIMAL_PLACES:
            return Decimal(1).scaleb(-int(value))
        return Decimal(str(value))

    def _spec(self, market: dict[str, Any]) -> InstrumentSpec:
        limits = market.get("limits") or {}
        precision = market.get("precision") or {}
        amount_step = self._step(precision.get("amount"))
        leverage = (limits.get("leverage") or {}).get("max") or self.info.max_leverage
        return InstrumentSpec(
            name=market["id"],
            kind=InstrumentKind.INVERSE if market.get("inverse") else InstrumentKind.LINEAR,
            base_currency=market.get("base") or "",
            quote_currency=market.get("quote") or "",
            settlement_currency=market.get("settle") or market.get("quote") or "",
            contract_size=_dec(market.get("contractSize"), "1"),  # type: ignore[arg-type]
            min_amount=_dec((limits.get("amount") or {}).get("min"), str(amount_step)),  # type: ignore[arg-type]
            amount_step=amount_step,
            tick_size=self._step(precision.get("price")),
            max_leverage=Decimal(str(leverage)),
            maker_fee=_dec(market.get("maker")),  # type: ignore[arg-type]
            taker_fee=_dec(market.get("taker"), "0.0005"),  # type: ignore[arg-type]
        )

    async def instruments(self) -> list[InstrumentSpec]:
        """Active perpetuals and futures (contracts); spot markets for spot-only exchanges."""
        markets = await self._call("load_markets")
        contracts = [m for m in markets.values() if m.get("contract") and not m.get("option")]
        chosen = contracts or [m for m in markets.values() if m.get("spot")]
        return [self._spec(m) for m in chosen if m.get("active", True) is not False]

    async def instrument(self, name: str) -> InstrumentSpec:
        await self._call("load_markets")
        return self._spec(self.exchange.market(self._symbol(name)))

    # --- account and market data --------------------------------------------------------------
    def _balance_params(self, currency: str | None) -> dict[str, Any]:
        if self.ccxt_id == "deribit":
            # without a code ccxt asks private/get_account_summaries; one currency is enough
            return {"code": currency or "BTC"}
        return {}

    async def account_summary(self, currency: str) -> AccountSummary:
        balance = await self._call("fetch_balance", self._balance_params(currency))
        row = balance.get(currency) or {}
        raw = balance.get("info") or {}
        raw = raw.get("result", raw) if isinstance(raw, dict) else {}
        total = _dec(row.get("total"))
        equity = _dec(raw.get("equity"), None) if isinstance(raw, dict) else None
        return AccountSummary(
            currency=currency,
            balance=total,  # type: ignore[arg-type]
            equity=equity if equity is not None else total,  # type: ignore[arg-type]
            available_funds=_dec(row.get("free")),  # type: ignore[arg-type]
            initial_margin=_dec(raw.get("initial_margin")) if isinstance(raw, dict) else Decimal(0),  # type: ignore[arg-type]
            maintenance_margin=(
                _dec(raw.get("maintenance_margin")) if isinstance(raw, dict) else Decimal(0)  # type: ignore[arg-type]
            ),
        )

    async def ticker(self, instrument: str) -> Ticker:
        symbol = self._symbol(instrument)
        raw = await self._call("fetch_ticker", symbol)
        info = raw.get("info") or {}
        last = _dec(raw.get("last"))
        return Ticker(
            instrument=self._market_id(symbol),
            last_price=last,  # type: ignore[arg-type]
            mark_price=_dec(raw.get("markPrice") or info.get("mark_price"), str(last)),  # type: ignore[arg-type]
            index_price=_dec(raw.get("indexPrice") or info.get("index_price"), str(last)),  # type: ignore[arg-type]
            best_bid=_dec(raw.get("bid"), None),
            best_ask=_dec(raw.get("ask"), None),
            timestamp_ms=int(raw.get("timestamp") or _now_ms()),
        )

    async def candles(
        self, instrument: str, resolution_minutes: int, start_ms: int, end_ms: int
    ) -> list[Candle]:
        timeframe = _TIMEFRAMES.get(resolution_minutes)
        if timeframe is None:
            raise ValueError(f"resolution {resolution_minutes} min is not supported")
        symbol = self._symbol(instrument)
        rows = await self._call("fetch_ohlcv", symbol, timeframe, since=start_ms)
        return [
            Candle(int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5] or 0))
            for r in rows
            if start_ms <= r[0] <= end_ms
        ]

    async def closed_candles(
        self, instrument: str, resolution_minutes: int
    ) -> AsyncIterator[Candle]:
        """Polls the candle history; yields each candle once its period has ended."""
        period_ms = resolution_minutes * 60_000
        last_open = (_now_ms() // period_ms - 1) * period_ms
        while self._state is ConnectionState.CONNECTED:
            now = _now_ms()
            for candle in await self.candles(instrument, resolution_minutes, last_open + 1, now):
                if candle.open_time_ms + period_ms <= now and candle.open_time_ms > last_open:
                    last_open = candle.open_time_ms
                    yield candle
            await asyncio.sleep(max(1.0, (last_open + 2 * period_ms - _now_ms()) / 1000))

    # --- orders -------------------------------------------------------------------------------
    async def place_bracket(self, request: BracketRequest) -> BracketResult:
        raise BrokerError(
            f"{self.info.name} has no exchange-linked brackets here: the bracket service "
            "emulates them with place_order",
            code="linked_orders_unsupported",
        )

    def _order_args(self, request: OrderRequest) -> tuple[str, dict[str, Any]]:
        order_type = request.order_type
        params: dict[str, Any] = {}
        if request.reduce_only:
            params["reduceOnly"] = True
        if request.label:
            params["label" if self.ccxt_id == "deribit" else "clientOrderId"] = request.label
        if order_type.startswith(("stop_", "take_")):
            if request.trigger_price is None:
                raise OrderRejected(f"{order_type} needs a trigger price", code="InvalidOrder")
            key = "stopLossPrice" if order_type.startswith("stop_") else "takeProfitPrice"
            params[key] = float(request.trigger_price)
            if self.ccxt_id == "deribit" and request.trigger:
                params["trigger"] = request.trigger
            order_type = "market" if order_type.endswith("_market") else "limit"
        if order_type not in ("market", "limit"):
            raise OrderRejected(f"order type {request.order_type!r} is not supported")
        return order_type, params

    async def place_order(self, request: OrderRequest) -> Order:
        symbol = self._symbol(request.instrument)
        order_type, params = self._order_args(request)
        price = float(request.price) if request.price is not None else None
        raw = await self._call(
            "create_order",
            symbol,
            order_type,
            request.side.value,
            float(request.amount),
            price,
            params,
            placing=True,
        )
        order = self._order(raw)
        self._symbols[order.order_id] = symbol
        return order

    async def cancel(self, order_id: str) -> Order:
        raw = await self._call("cancel_order", order_id, self._symbols.get(order_id))
        return self._order(raw)

    async def open_orders(
        self, instrument: str | None = None, label_prefix: str | None = None
    ) -> list[Order]:
        symbol = self._symbol(instrument) if instrument else None
        rows = await self._call("fetch_open_orders", symbol)
        orders = [self._order(raw) for raw in rows]
        if label_prefix:
            orders = [o for o in orders if o.label.startswith(label_prefix)]
        return orders

    async def order_state(self, order_id: str) -> Order:
        return self._order(await self._call("fetch_order", order_id, self._symbols.get(order_id)))

    async def orders_by_label(self, label: str, currency: str) -> list[Order]:
        """Orders carrying ``label``: Deribit's own lookup by label; elsewhere open and recent
        closed orders, filtered (ccxt has no unified lookup by label)."""
        if self.ccxt_id == "deribit":
            response = await self._call(
                "privateGetGetOrderStateByLabel", {"currency": currency, "label": label}
            )
            rows = self.exchange.parse_orders(response.get("result") or [])
            return [self._order(raw) for raw in rows]
        found = [o for o in await self.open_orders() if o.label == label]
        if self.exchange.has.get("fetchClosedOrders"):
            params = {"code": currency} if self.ccxt_id == "deribit" else {}
            try:
                closed = await self._call("fetch_closed_orders", None, None, None, params)
            except BrokerError:
                closed = []
            seen = {o.order_id for o in found}
            found += [
                o
                for o in (self._order(raw) for raw in closed)
                if o.label == label and o.order_id not in seen
            ]
        return found

    def _order(self, raw: dict[str, Any]) -> Order:
        info = raw.get("info") or {}
        native_state = info.get("order_state")
        try:
            state = OrderState(native_state)
        except ValueError:
            state = _STATUS.get(raw.get("status") or "", OrderState.OPEN)
        order_type = info.get("order_type") or raw.get("type") or "market"
        label = info.get("label") or raw.get("clientOrderId") or ""
        return Order(
            order_id=str(raw.get("id")),
            instrument=self._market_id(raw.get("symbol")) or info.get("instrument_name", ""),
            direction=Side(raw.get("side") or info.get("direction")),
            order_type=order_type,
            amount=_dec(info.get("amount", raw.get("amount"))),  # type: ignore[arg-type]
            filled_amount=_dec(info.get("filled_amount", raw.get("filled"))),  # type: ignore[arg-type]
            state=state,
            label=label,
            price=_dec(raw.get("price"), None),
            trigger_price=_dec(raw.get("triggerPrice") or info.get("trigger_price"), None),
            average_price=_dec(raw.get("average"), None),
            reduce_only=bool(raw.get("reduceOnly") or info.get("reduce_only")),
            cancel_reason=info.get("cancel_reason"),
            created_ms=int(raw.get("timestamp") or 0),
            updated_ms=int(raw.get("lastUpdateTimestamp") or raw.get("timestamp") or 0),
        )

    # --- positions and fills ------------------------------------------------------------------
    async def positions(self, currency: str | None = None) -> list[Position]:
        params = {"currency": currency} if (currency and self.ccxt_id == "deribit") else {}
        rows = await self._call("fetch_positions", None, params)
        result = []
        for raw in rows:
            contracts = _dec(raw.get("contracts"))
            info = raw.get("info") or {}
            size = _dec(info.get("size"), None) if self.ccxt_id == "deribit" else None
            if size is None:
                size = -contracts if raw.get("side") == "short" else contracts  # type: ignore[operator]
            if not size:
                continue
            result.append(
                Position(
                    instrument=self._market_id(raw.get("symbol")),
                    size=size,
                    average_price=_dec(raw.get("entryPrice")),  # type: ignore[arg-type]
                    mark_price=_dec(raw.get("markPrice")),  # type: ignore[arg-type]
                    floating_pnl=_dec(raw.get("unrealizedPnl")),  # type: ignore[arg-type]
                    realized_pnl=_dec(raw.get("realizedPnl")),  # type: ignore[arg-type]
                )
            )
        return result

    async def close_position(self, instrument: str) -> Order | None:
        """A reduce-only market order for the whole position, or None when flat."""
        name = self._market_id(self._symbol(instrument))
        for position in await self.positions():
            if position.instrument == name and position.size:
                side = Side.SELL if position.size > 0 else Side.BUY
                request = OrderRequest(name, side, abs(position.size), reduce_only=True)
                return await self.place_order(request)
        return None

    async def fills(self, instrument: str, since_ms: int = 0) -> list[Fill]:
        symbol = self._symbol(instrument)
        rows = await self._call("fetch_my_trades", symbol, since_ms or None)
        fills = []
        for raw in rows:
            info = raw.get("info") or {}
            fee = raw.get("fee") or {}
            fills.append(
                Fill(
                    trade_id=str(raw.get("id")),
                    order_id=str(raw.get("order")),
                    instrument=self._market_id(raw.get("symbol")),
                    direction=Side(raw.get("side")),
                    price=_dec(raw.get("price")),  # type: ignore[arg-type]
                    amount=_dec(info.get("amount", raw.get("amount"))),  # type: ignore[arg-type]
                    fee=_dec(fee.get("cost")),  # type: ignore[arg-type]
                    fee_currency=fee.get("currency") or "",
                    liquidity="M" if raw.get("takerOrMaker") == "maker" else "T",
                    label=info.get("label") or "",
                    timestamp_ms=int(raw.get("timestamp") or 0),
                )
            )
        return fills

    # --- events -------------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[BrokerEvent]:
        """ORDER events by polling open orders every ``poll_interval`` s (ccxt's REST API has
        no push); a failed poll emits DISCONNECTED and ends the stream."""
        queue: asyncio.Queue[BrokerEvent] = asyncio.Queue()
        self._event_queues.add(queue)
        known: dict[str, Order] = {}
        try:
            while self._state is ConnectionState.CONNECTED:
                try:
                    current = {o.order_id: o for o in await self.open_orders()}
                except (ConnectionLost, RetryableError, AuthenticationFailed) as exc:
                    self._state = ConnectionState.DISCONNECTED
                    yield BrokerEvent(EventKind.DISCONNECTED, str(exc), _now_ms())
                    return
                for order_id, order in current.items():
                    if known.get(order_id) != order:
                        yield BrokerEvent(EventKind.ORDER, order, _now_ms())
                for order_id in known.keys() - current.keys():
                    try:
                        yield BrokerEvent(
                            EventKind.ORDER, await self.order_state(order_id), _now_ms()
                        )
                    except NotFound:
                        continue
                known = current
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=self.poll_interval)
                except TimeoutError:
                    continue
                yield event
                if event.kind is EventKind.DISCONNECTED:
                    return
        finally:
            self._event_queues.discard(queue)


def _replace_urls(urls: Any, base: str) -> Any:
    """Every URL in ccxt's ``urls['api']`` (a string or nested dict) pointed at ``base``."""
    if isinstance(urls, dict):
        return {key: _replace_urls(value, base) for key, value in urls.items()}
    return base.rstrip("/")
