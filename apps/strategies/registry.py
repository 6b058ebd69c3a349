"""The strategy catalogue: every module in ``apps/strategies/library/`` that defines a
BaseStrategy subclass with an ``id`` is a strategy. Adding a file adds a strategy.

Pure Python: no Django.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Mapping
from functools import cache
from typing import Any

from apps.strategies import library
from apps.strategies.base import BaseStrategy, ParamError, validate_param_values


class UnknownStrategy(LookupError):
    """No strategy has this id."""

    def __init__(self, strategy_id: str) -> None:
        super().__init__(f"unknown strategy {strategy_id!r}")
        self.strategy_id = strategy_id


class DuplicateStrategy(RuntimeError):
    """Two modules claim the same id: a programming error, raised at discovery."""


@cache
def _catalogue() -> dict[str, type[BaseStrategy]]:
    found: dict[str, type[BaseStrategy]] = {}
    for module_info in sorted(pkgutil.iter_modules(library.__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{library.__name__}.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(cls, BaseStrategy)
                and cls is not BaseStrategy
                and cls.__module__ == module.__name__
                and cls.id
            ):
                if cls.id in found and found[cls.id] is not cls:
                    raise DuplicateStrategy(
                        f"strategy id {cls.id!r} is defined by {found[cls.id].__module__} "
                        f"and {cls.__module__}"
                    )
                found[cls.id] = cls
    return found


def reload() -> None:
    """Forget the catalogue so the next call discovers the library again (tests, dev)."""
    _catalogue.cache_clear()


def strategy_class(strategy_id: str) -> type[BaseStrategy]:
    try:
        return _catalogue()[strategy_id]
    except KeyError:
        raise UnknownStrategy(strategy_id) from None


def get_strategy(strategy_id: str, params: Mapping[str, Any] | None = None) -> BaseStrategy:
    """A fresh instance with validated parameters (UnknownStrategy, ParamError)."""
    return strategy_class(strategy_id)(params)


def list_strategies() -> list[dict[str, Any]]:
    """The catalogue entries, sorted by id."""
    return [cls.describe() for _, cls in sorted(_catalogue().items())]


def strategy_ids() -> list[str]:
    return sorted(_catalogue())


def validate_params(strategy_id: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The full parameter set (defaults filled in) or ParamError naming the bad field."""
    cls = strategy_class(strategy_id)
    values = validate_param_values(cls.params_schema, params)
    cls(values)  # cross-field rules (check_params) raise ParamError too
    return values


__all__ = [
    "DuplicateStrategy",
    "ParamError",
    "UnknownStrategy",
    "get_strategy",
    "list_strategies",
    "reload",
    "strategy_class",
    "strategy_ids",
    "validate_params",
]
