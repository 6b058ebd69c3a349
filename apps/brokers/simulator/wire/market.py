"""The market behind the wire: the engine, the candle feed, and the notifications they cause."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from apps.brokers.simulator.instruments import DEFAULT_BALANCES, DEFAULT_SPECS


@dataclass
class SimOptions:
    client_id: str = "paper"
    client_secret: str = "paper"
    testnet: bool = True
    token_ttl: float = 900.0
    min_heartbeat_interval: float = 10.0
    max_frame_bytes: int = 32 * 1024
    balances: dict[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_BALANCES))
    data_path: str | None = None
    speed: float | None = 60.0  # None: no replay; 0: as fast as possible
    history_candles: int = 500


class MarketHub:
    def __init__(self, options: SimOptions, *, publish: Callable[..., None]) -> None:
        self.options = options
        self.publish = publish
        self.engine: Any = None

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def instrument_names(self) -> frozenset[str]:
        return frozenset(DEFAULT_SPECS)

    def after_subscribe(self, session: Any, channels: list[str]) -> None:
        pass

    def cancel_on_disconnect(self, order_ids: set[str]) -> None:
        pass

    def set_price(self, instrument: str, price: Decimal) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {}

    def reset(self) -> None:
        pass
