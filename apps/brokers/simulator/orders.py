"""Orders inside the engine: the order kinds Deribit knows, number parsing, the working order.

``WorkingOrder`` is the engine's mutable order; callers only ever see ``records.SimOrder``
snapshots of it. A working order that can be reached by the price ("armed") has a threshold
``th`` and a side ``up``: a rising price reaches buy stops, sell takes and sell limits, a falling
price sell stops, buy takes and buy limits.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from .errors import invalid_params
from .records import SimOrder

if TYPE_CHECKING:
    from .book import Book

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

Number = Decimal | int | float | str


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


def clean_price(value: Decimal) -> Decimal:
    """An average price without the noise of 28-digit division."""
    value = value.quantize(Decimal("1e-8"))
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


class WorkingOrder:
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
        "oco_cut",
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

    def __init__(self, book: Book, order_id: str, seq: int, is_buy: bool, fields: dict[str, Any]):
        self.book = book
        self.order_id = order_id
        self.seq = seq
        self.is_buy = is_buy
        self.order_type: str = fields["type"]
        self.amount: Decimal = fields["amount"]
        self.target_amount: Decimal = fields["amount"]
        self.oco_cut = ZERO  # taken off by incremental fills of its OCO partner
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
                average = clean_price(self.filled / self.fill_value)
            else:
                average = clean_price(self.fill_value / self.filled)
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


def id_prefix(currency: str) -> str:
    return "" if currency == "BTC" else f"{currency}-"


def fault_kind_of(order_type: str, *, secondary: bool) -> str:
    if order_type.startswith("stop"):
        return "stop"
    if order_type.startswith("take"):
        return "take"
    return "secondary" if secondary else "primary"


def order_fault_kind(order: WorkingOrder, *, secondary: bool) -> str:
    return fault_kind_of(order.order_type, secondary=secondary)


def type_matches(order: WorkingOrder, kind: str) -> bool:
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
