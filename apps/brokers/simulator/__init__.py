"""The exchange simulator: a Deribit-like matching engine, its candle feed and fault hooks.

Public API (pure Python, no Django):

- ``engine.ExchangeEngine``: the account and matching engine (see its module docstring; its
  code is split over ``engine``, ``reads``, ``matching``, ``book``, ``orders``, ``validation``).
- ``records``: ``SimOrder``, ``SimTrade``, ``SimPosition``, ``SimAccount``, ``SimTicker``,
  ``Changes`` and ``PlaceResult`` snapshots, each with ``to_deribit()``.
- ``errors.ExchangeError``: Deribit error code, message and data.
- ``instruments``: ``DEFAULT_SPECS`` / ``default_specs()``, ``DEFAULT_BALANCES``.
- ``contract``: inverse / linear P&L, fees and average prices in Decimal.
- ``feed``: ``load_candles``, ``load_candle_arrays``, ``CandleFeed`` (sync and async replay).
- ``faults``: ``EngineFaults`` (``engine.faults``) and ``move_price``.
"""

from .engine import ExchangeEngine, intra_candle_path
from .errors import ExchangeError
from .instruments import DEFAULT_BALANCES, DEFAULT_SPECS, default_specs
from .records import (
    Changes,
    PlaceResult,
    SimAccount,
    SimOrder,
    SimPosition,
    SimTicker,
    SimTrade,
)

__all__ = [
    "DEFAULT_BALANCES",
    "DEFAULT_SPECS",
    "Changes",
    "ExchangeEngine",
    "ExchangeError",
    "PlaceResult",
    "SimAccount",
    "SimOrder",
    "SimPosition",
    "SimTicker",
    "SimTrade",
    "default_specs",
    "intra_candle_path",
]
