"""The registry discovers the library, validates parameters and refuses unknown ids."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from apps.strategies import library, registry
from apps.strategies.base import BaseStrategy, ParamError

EIGHT = ["fast_test", "ma_cross", "price_action", "razor", "scalping", "smc", "thor", "vortex"]


def test_all_eight_strategies_are_discovered():
    assert registry.strategy_ids() == EIGHT
    listed = registry.list_strategies()
    assert [s["id"] for s in listed] == EIGHT
    for entry in listed:
        assert entry["name"] and entry["description"]
        assert entry["warmup"] >= 1 and entry["timeframe"] == 1
        for param in entry["params"]:
            assert {"name", "type", "default", "min", "max", "help"} <= set(param)


def test_unknown_id_raises_a_clear_error():
    with pytest.raises(registry.UnknownStrategy, match="unknown strategy 'nope'"):
        registry.get_strategy("nope")
    with pytest.raises(registry.UnknownStrategy):
        registry.validate_params("nope", {})


def test_validate_params_fills_defaults_and_names_the_bad_field():
    assert registry.validate_params("ma_cross", {"fast": 5}) == {
        "fast": 5,
        "slow": 30,
        "stop_loss_pct": 2.0,
        "take_profit_pct": 6.0,
    }
    with pytest.raises(ParamError) as err:
        registry.validate_params("ma_cross", {"stop_loss_pct": -1})
    assert err.value.field == "stop_loss_pct"
    with pytest.raises(ParamError) as err:
        registry.validate_params("razor", {"min_vol": 6.0})
    assert err.value.field == "min_vol"
    with pytest.raises(ParamError) as err:
        registry.validate_params("razor", ["not", "a", "mapping"])
    assert err.value.field == "params"


def test_get_strategy_returns_fresh_instances():
    one, two = registry.get_strategy("fast_test"), registry.get_strategy("fast_test")
    assert one is not two and isinstance(one, BaseStrategy)


def test_adding_a_file_adds_a_strategy():
    path = Path(library.__path__[0]) / "zz_added_in_test.py"
    path.write_text(
        "from apps.strategies.base import BaseStrategy\n\n\n"
        "class Added(BaseStrategy):\n"
        "    id = 'zz_added'\n"
        "    name = 'Added'\n"
        "    description = 'added by a test'\n\n"
        "    def decide(self, candles):\n"
        "        return None\n"
    )
    try:
        registry.reload()
        assert "zz_added" in registry.strategy_ids()
        assert registry.get_strategy("zz_added").analyze([]) is None
    finally:
        path.unlink()
        sys.modules.pop("apps.strategies.library.zz_added_in_test", None)
        registry.reload()
    assert "zz_added" not in registry.strategy_ids()
