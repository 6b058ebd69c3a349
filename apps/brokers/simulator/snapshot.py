"""The paper exchange as data: an engine and its feed to a JSON-able dict and back.

Why: the paper account lives in the runner's process, and "after a crash the state comes back
from the database" must hold for it too. ``engine_snapshot(engine, feed)`` captures what a
Deribit account would keep (balances, positions, open orders with their OTO/OCO/OTOCO links,
order and trade history, id counters) plus the replay's cursor and time offset;
``engine_restore(data, engine, feed)`` puts it into a freshly built engine and feed, so the
restored pair continues exactly where the old one stopped: same ids, same fills for the same
candles, a clock that never goes back. No Django here: the store is the caller's business.

Format (``FORMAT_VERSION``): Decimals as strings, floats as JSON numbers (``repr`` round-trips);
orders and trades as rows under a header of field names, which halves the size and makes a
snapshot of another code version fail loudly (``SnapshotError``) instead of restoring garbage.

Bounds: the engine keeps every order and fill forever; a snapshot keeps the live orders, the
newest ``max_closed_orders`` closed ones and the newest ``max_trades`` fills, plus whatever an
open bracket still needs (the filled entry of live legs and the entry's fills, so its trade can
be recorded from fills after a restore). Older history is gone after a restore: ``order_state``
of such an order answers "not found", as Deribit's own archive eventually does.
"""

from __future__ import annotations

import dataclasses
import itertools
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from .orders import WorkingOrder
from .records import SimTrade

if TYPE_CHECKING:
    from .engine import ExchangeEngine
    from .feed import CandleFeed

FORMAT_VERSION = 1
MAX_CLOSED_ORDERS = 100
MAX_TRADES = 200

# every slot of WorkingOrder except the book (stored as its instrument) and th/up (per book)
ORDER_FIELDS = (
    "order_id",
    "seq",
    "is_buy",
    "order_type",
    "amount",
    "target_amount",
    "oco_cut",
    "price",
    "trigger_price",
    "trigger",
    "triggered",
    "label",
    "time_in_force",
    "post_only",
    "reject_post_only",
    "reduce_only",
    "state",
    "filled",
    "fill_value",
    "created",
    "updated",
    "cancel_reason",
    "linked_order_type",
    "trigger_fill_condition",
    "oto_ids",
    "oco_ref",
    "primary_id",
    "is_secondary",
    "is_primary_otoco",
    "replaced",
    "active",
    "cap_event",
)
ORDER_DECIMALS = frozenset(
    {"amount", "target_amount", "oco_cut", "price", "trigger_price", "filled", "fill_value"}
)
TRADE_FIELDS = tuple(field.name for field in dataclasses.fields(SimTrade))
TRADE_DECIMALS = frozenset(
    field.name for field in dataclasses.fields(SimTrade) if field.type == "Decimal"
)
BOOK_DECIMALS = ("size", "entry_value", "realized")
BOOK_FLOATS = ("last", "mark", "index")


class SnapshotError(ValueError):
    """A snapshot that cannot be restored (unknown version, corrupt, another market)."""


# --- snapshot -------------------------------------------------------------------------------


def engine_snapshot(
    engine: ExchangeEngine,
    feed: CandleFeed,
    *,
    max_closed_orders: int = MAX_CLOSED_ORDERS,
    max_trades: int = MAX_TRADES,
) -> dict[str, Any]:
    """The engine's account and the feed's cursor as a JSON-able dict (see the module doc).

    Call it between engine operations (never from inside a listener): the engine must have no
    pending change reports.
    """
    if engine._pending:
        raise RuntimeError("engine_snapshot inside an engine operation (changes pending)")
    orders, trades = _kept(engine, max_closed_orders, max_trades)
    return {
        "format": FORMAT_VERSION,
        "engine": {
            "now_ms": engine.now_ms,
            "version": engine.version,
            "order_seq": engine._order_seq,
            "trade_seq": engine._trade_seq,
            "oco_seq": engine._oco_seq,
            "price_event": engine._price_event,
            "initial": _money(engine._initial),
            "balances": _money(engine._balances),
            "realized": _money(engine._realized),
            "fees": _money(engine._fees),
            "books": {name: _book(book) for name, book in engine._books.items()},
            "order_fields": list(ORDER_FIELDS),
            "orders": [_order_row(order) for order in orders],
            "live": list(engine._live),
            "trade_fields": list(TRADE_FIELDS),
            "trades": [_trade_row(trade) for trade in trades],
        },
        "feed": {
            "position": feed.position,
            "rounds": feed.rounds,
            "stepped": feed.stepped,
            "time_offset_ms": feed.time_offset_ms,
            "series": _series(feed),
        },
    }


def _kept(
    engine: ExchangeEngine, max_closed_orders: int, max_trades: int
) -> tuple[list[WorkingOrder], list[SimTrade]]:
    """The orders and fills a snapshot keeps, each in the engine's own order."""
    pinned = set(engine._live)
    for order in engine._live.values():
        if order.primary_id is not None:
            pinned.add(order.primary_id)  # the filled entry of live legs
    closed = [order_id for order_id, order in engine._orders.items() if not order.live]
    newest = set(closed[-max_closed_orders:]) if max_closed_orders > 0 else set()
    orders = [
        order
        for order_id, order in engine._orders.items()
        if order_id in pinned or order_id in newest
    ]
    all_trades = engine._trades
    cut = max(0, len(all_trades) - max_trades)
    trades = [
        trade for index, trade in enumerate(all_trades) if index >= cut or trade.order_id in pinned
    ]
    return orders, trades


def _money(values: dict[str, Decimal]) -> dict[str, str]:
    return {currency: str(amount) for currency, amount in values.items()}


def _book(book: Any) -> dict[str, Any]:
    data: dict[str, Any] = {name: getattr(book, name) for name in BOOK_FLOATS}
    data["split"] = book.split
    for name in BOOK_DECIMALS:
        data[name] = str(getattr(book, name))
    # the matching order among equal thresholds is the list order: kept as it is
    data["resting"] = [[order.order_id, order.th, order.up] for order in book.resting]
    return data


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list | tuple):
        return list(value)
    return value


def _order_row(order: WorkingOrder) -> list[Any]:
    return [order.book.name, *(_encode(getattr(order, name)) for name in ORDER_FIELDS)]


def _trade_row(trade: SimTrade) -> list[Any]:
    return [_encode(getattr(trade, name)) for name in TRADE_FIELDS]


def _series(feed: CandleFeed) -> dict[str, int]:
    """What identifies the candle series the cursor points into."""
    return {
        "count": len(feed.candles),
        "first_open_ms": feed.candles[0].open_time_ms,
        "last_open_ms": feed.candles[-1].open_time_ms,
    }


# --- restore --------------------------------------------------------------------------------


def engine_restore(data: Any, engine: ExchangeEngine, feed: CandleFeed) -> None:
    """Put a snapshot into a freshly built ``engine`` and its ``feed`` (same specs, same series).

    All or nothing: ``SnapshotError`` (naming what is wrong) leaves both as they were. The engine
    must be fresh (no order, no fill): a restore replaces an account, it never merges two.
    """
    if engine._orders or engine._trades:
        raise RuntimeError("engine_restore needs a fresh engine (it already has orders or fills)")
    if not isinstance(data, dict):
        raise SnapshotError(f"a snapshot is a JSON object, not {type(data).__name__}")
    version = data.get("format")
    if version != FORMAT_VERSION:
        raise SnapshotError(
            f"unknown snapshot format {version!r} (this code reads {FORMAT_VERSION})"
        )
    try:
        state = _decode_engine(data["engine"], engine)
        cursor = _decode_feed(data["feed"], feed)
    except SnapshotError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, InvalidOperation, AttributeError) as exc:
        raise SnapshotError(f"corrupt snapshot: {type(exc).__name__}: {exc}") from exc
    _apply_engine(engine, state)
    for name, value in cursor.items():
        setattr(feed, name, value)


def account_restore(data: Any, engine: ExchangeEngine) -> None:
    """Only the account part of a snapshot into a fresh ``engine`` (no feed): for reading the
    stored paper account (equity, positions) outside the process that trades on it."""
    if engine._orders or engine._trades:
        raise RuntimeError("account_restore needs a fresh engine (it already has orders or fills)")
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        raise SnapshotError("not a snapshot of this code's format")
    try:
        state = _decode_engine(data["engine"], engine)
    except SnapshotError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, InvalidOperation, AttributeError) as exc:
        raise SnapshotError(f"corrupt snapshot: {type(exc).__name__}: {exc}") from exc
    _apply_engine(engine, state)


def _decimal(value: Any, what: str) -> Decimal:
    if not isinstance(value, str):
        raise SnapshotError(f"{what}: a Decimal is stored as a string, not {value!r}")
    result = Decimal(value)
    if not result.is_finite():
        raise SnapshotError(f"{what}: not a finite number: {value!r}")
    return result


def _decimals(values: dict[str, Any], what: str) -> dict[str, Decimal]:
    return {currency: _decimal(amount, f"{what}.{currency}") for currency, amount in values.items()}


def _decode_engine(raw: dict[str, Any], engine: ExchangeEngine) -> dict[str, Any]:
    """Everything the engine will hold, built aside so a bad snapshot changes nothing."""
    if raw["order_fields"] != list(ORDER_FIELDS) or raw["trade_fields"] != list(TRADE_FIELDS):
        raise SnapshotError("the order or trade fields differ from this code's engine")
    currencies = set(engine._balances)
    money = {
        name: _decimals(raw[name], name) for name in ("initial", "balances", "realized", "fees")
    }
    for name, values in money.items():
        if set(values) != currencies:
            raise SnapshotError(
                f"{name}: currencies {sorted(values)}, expected {sorted(currencies)}"
            )
    books = raw["books"]
    if set(books) != set(engine._books):
        raise SnapshotError(f"instruments {sorted(books)}, expected {sorted(engine._books)}")
    orders: dict[str, WorkingOrder] = {}
    for row in raw["orders"]:
        order = _order_from_row(row, engine)
        orders[order.order_id] = order
    live = list(raw["live"])
    if set(live) != {order_id for order_id, order in orders.items() if order.live}:
        raise SnapshotError("the live orders do not match the orders' states")
    resting: dict[str, list[tuple[WorkingOrder, float, bool]]] = {}
    book_values: dict[str, dict[str, Any]] = {}
    for name, book in books.items():
        values: dict[str, Any] = {field: float(book[field]) for field in BOOK_FLOATS}
        values["split"] = bool(book["split"])
        for field in BOOK_DECIMALS:
            values[field] = _decimal(book[field], f"{name}.{field}")
        book_values[name] = values
        resting[name] = []
        for order_id, th, up in book["resting"]:
            order = orders.get(order_id)
            if order is None or not order.live or order.book.name != name:
                raise SnapshotError(f"resting order {order_id} of {name} is not a live order there")
            resting[name].append((order, float(th), bool(up)))
    trades = [_trade_from_row(row) for row in raw["trades"]]
    counters = {name: int(raw[name]) for name in ("now_ms", "version", "price_event")}
    seqs = {name: int(raw[name]) for name in ("order_seq", "trade_seq", "oco_seq")}
    if any(order.seq > seqs["order_seq"] for order in orders.values()) or any(
        trade.trade_seq > seqs["trade_seq"] for trade in trades
    ):
        raise SnapshotError("an id is above its counter: ids would repeat")
    return {
        "money": money,
        "books": book_values,
        "orders": orders,
        "live": live,
        "resting": resting,
        "trades": trades,
        "counters": counters,
        "seqs": seqs,
    }


def _order_from_row(row: list[Any], engine: ExchangeEngine) -> WorkingOrder:
    if len(row) != len(ORDER_FIELDS) + 1:
        raise SnapshotError(f"an order row has {len(row)} values, expected {len(ORDER_FIELDS) + 1}")
    instrument, *values = row
    book = engine._books.get(instrument)
    if book is None:
        raise SnapshotError(f"an order on unknown instrument {instrument!r}")
    order = WorkingOrder.__new__(WorkingOrder)
    order.book = book
    order.th = 0.0
    order.up = False
    for name, value in zip(ORDER_FIELDS, values, strict=True):
        if name in ORDER_DECIMALS and value is not None:
            value = _decimal(value, f"order {values[0]}.{name}")
        elif name == "oto_ids":
            value = [str(order_id) for order_id in value]
        setattr(order, name, value)
    return order


def _trade_from_row(row: list[Any]) -> SimTrade:
    if len(row) != len(TRADE_FIELDS):
        raise SnapshotError(f"a trade row has {len(row)} values, expected {len(TRADE_FIELDS)}")
    values = {
        name: _decimal(value, f"trade {row[0]}.{name}") if name in TRADE_DECIMALS else value
        for name, value in zip(TRADE_FIELDS, row, strict=True)
    }
    return SimTrade(**values)


def _apply_engine(engine: ExchangeEngine, state: dict[str, Any]) -> None:
    """Install a decoded state (nothing here can fail on the snapshot's content)."""
    money = state["money"]
    engine._initial = money["initial"]
    engine._balances = money["balances"]
    engine._realized = money["realized"]
    engine._fees = money["fees"]
    for name, values in state["books"].items():
        book = engine._books[name]
        for field, value in values.items():
            setattr(book, field, value)
        book.resting = []
        for order, th, up in state["resting"][name]:
            order.th = th
            order.up = up
            book.resting.append(order)
        book.dirty = True
    orders: dict[str, WorkingOrder] = state["orders"]
    engine._orders = orders
    engine._live = {order_id: orders[order_id] for order_id in state["live"]}
    engine._labels = {}
    for order in orders.values():
        if order.label:
            engine._labels.setdefault(order.label, []).append(order)
    trades: list[SimTrade] = state["trades"]
    engine._trades = trades
    engine._trades_by_order = {}
    engine._trades_by_instrument = {}
    for trade in trades:
        engine._trades_by_order.setdefault(trade.order_id, []).append(trade)
        engine._trades_by_instrument.setdefault(trade.instrument_name, []).append(trade)
    engine._trades_in_time_order = all(
        earlier.timestamp <= later.timestamp for earlier, later in itertools.pairwise(trades)
    )
    counters = state["counters"]
    engine.now_ms = counters["now_ms"]
    engine.version = counters["version"]
    engine._price_event = counters["price_event"]
    seqs = state["seqs"]
    engine._order_seq = seqs["order_seq"]
    engine._trade_seq = seqs["trade_seq"]
    engine._oco_seq = seqs["oco_seq"]


def _decode_feed(raw: dict[str, Any], feed: CandleFeed) -> dict[str, int]:
    if raw["series"] != _series(feed):
        raise SnapshotError(
            f"the snapshot replays another candle series ({raw['series']}, this feed {_series(feed)})"
        )
    cursor = {name: int(raw[name]) for name in ("position", "rounds", "stepped", "time_offset_ms")}
    if not 0 <= cursor["position"] <= len(feed.candles) or cursor["rounds"] < 0:
        raise SnapshotError(f"replay cursor out of range: {cursor}")
    return cursor


def snapshot_summary(data: Any) -> dict[str, Any]:
    """What a stored snapshot holds, in a few numbers (for the admin and ``paper_reset``)."""
    try:
        raw = data["engine"]
        positions = {
            name: book["size"] for name, book in raw["books"].items() if Decimal(book["size"])
        }
        return {
            "format": data.get("format"),
            "balances": raw["balances"],
            "positions": positions,
            "open_orders": len(raw["live"]),
            "orders": len(raw["orders"]),
            "fills": len(raw["trades"]),
            "replay_position": data["feed"]["position"],
            "replay_rounds": data["feed"]["rounds"],
            "clock_ms": raw["now_ms"],
        }
    except (KeyError, TypeError, ValueError, InvalidOperation, AttributeError):
        return {"format": data.get("format") if isinstance(data, dict) else None, "corrupt": True}
