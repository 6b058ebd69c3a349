"""Indicators against hand-computed values and published worked examples (StockCharts)."""

from __future__ import annotations

import numpy as np
import pytest

from apps.strategies import indicators as ind

# StockCharts "Moving Averages" worked example: 10-day EMA of these closes.
EMA_CLOSES = [
    22.27, 22.19, 22.08, 22.17, 22.18, 22.13, 22.23, 22.43, 22.24, 22.29,
    22.15, 22.39, 22.38, 22.61, 23.36, 24.05, 23.75, 23.83, 23.95, 23.63,
    23.82, 23.87, 23.65, 23.19, 23.10, 23.33, 22.68, 23.10, 22.40, 22.17,
]  # fmt: skip
EMA10_PUBLISHED = [
    22.22, 22.21, 22.24, 22.27, 22.33, 22.52, 22.80, 22.97, 23.13, 23.28, 23.34,
    23.43, 23.51, 23.54, 23.47, 23.40, 23.39, 23.26, 23.23, 23.08, 22.92,
]  # fmt: skip

# StockCharts "RSI" worked example (Wilder, 14): closes and the published RSI from index 14.
RSI_CLOSES = [
    44.34, 44.09, 44.15, 43.61, 44.33, 44.83, 45.10, 45.42, 45.84, 46.08, 45.89,
    46.03, 45.61, 46.28, 46.28, 46.00, 46.03, 46.41, 46.22, 45.64, 46.21, 46.25,
    45.71, 46.45, 45.78, 45.35, 44.03, 44.18, 44.22, 44.57, 43.42, 42.66, 43.13,
]  # fmt: skip
RSI14_PUBLISHED = [
    70.53, 66.32, 66.55, 69.41, 66.36, 57.97, 62.93, 63.26, 56.06, 62.38,
    54.71, 50.42, 39.99, 41.46, 41.87, 45.46, 37.30, 33.08, 37.77,
]  # fmt: skip


def test_sma_hand_computed_with_nan_warmup():
    out = ind.sma([1, 2, 3, 4, 5], 3)
    assert np.isnan(out[:2]).all()
    assert out[2:].tolist() == [2.0, 3.0, 4.0]


def test_warmup_edge_is_nan_until_exactly_n_values():
    assert np.isnan(ind.sma([1.0, 2.0], 3)).all()
    assert np.isnan(ind.ema([1.0, 2.0], 3)).all()
    assert ind.ema([1.0, 2.0, 3.0], 3).tolist()[2] == 2.0
    assert np.isnan(ind.rsi([1.0, 2.0, 3.0], 3)).all()  # n changes need n + 1 closes
    assert not np.isnan(ind.rsi([1.0, 2.0, 3.0, 4.0], 3)[3])
    assert np.isnan(ind.atr([2.0], [1.0], [1.5], 2)).all()


def test_invalid_period_is_refused():
    with pytest.raises(ValueError):
        ind.sma([1.0, 2.0], 0)
    with pytest.raises(ValueError):
        ind.rsi([1.0, 2.0], 2, method="ema")


def test_ema_is_sma_seeded_and_matches_published_example():
    out = ind.ema(EMA_CLOSES, 10)
    assert np.isnan(out[:9]).all()
    assert out[9] == pytest.approx(np.mean(EMA_CLOSES[:10]))
    # The published sheet rounds each step to 2 decimals, so allow one cent.
    np.testing.assert_allclose(out[9:], EMA10_PUBLISHED, atol=0.011)


def test_ema_hand_computed():
    # alpha = 0.5; seed mean(1, 2, 3) = 2; then 0.5*4 + 0.5*2 = 3; 0.5*6 + 0.5*3 = 4.5
    assert ind.ema([1, 2, 3, 4, 6], 3).tolist()[2:] == [2.0, 3.0, 4.5]


def test_rsi_wilder_matches_published_example():
    out = ind.rsi(RSI_CLOSES, 14)
    assert np.isnan(out[:14]).all()
    # first value by hand: mean gain and mean loss over the first 14 changes
    changes = np.diff(RSI_CLOSES[:15])
    gain, loss = changes[changes > 0].sum() / 14, -changes[changes < 0].sum() / 14
    assert out[14] == pytest.approx(100 - 100 / (1 + gain / loss), rel=1e-12)
    # StockCharts' sheet rounds the intermediate averages; within 0.1 point of it.
    np.testing.assert_allclose(out[14:], RSI14_PUBLISHED, atol=0.1)


def test_rsi_hand_computed_wilder_and_simple():
    closes = [1, 2, 1, 2, 3]  # changes +1 -1 +1 +1
    # Wilder n=2: seed gain .5 loss .5 -> 50; then gain .75 loss .25 -> 75; .875/.125 -> 87.5
    assert ind.rsi(closes, 2).tolist()[2:] == [50.0, 75.0, 87.5]
    # Simple n=2: 50, 50, then no losses -> 100
    assert ind.rsi(closes, 2, method="simple").tolist()[2:] == [50.0, 50.0, 100.0]


def test_rsi_flat_prices_is_50_not_nan():
    assert ind.rsi([5.0] * 6, 3)[3:].tolist() == [50.0, 50.0, 50.0]


def test_true_range_and_atr_with_gap():
    high, low, close = [10, 14, 13], [8, 12, 9], [9, 13, 10]
    # TR: 2; max(2, |14-9|, |12-9|) = 5; max(4, |13-13|, |9-13|) = 4
    assert ind.true_range(high, low, close).tolist() == [2.0, 5.0, 4.0]
    wilder = ind.atr(high, low, close, 2)
    assert np.isnan(wilder[0]) and wilder[1:].tolist() == [3.5, 3.75]
    assert ind.atr(high, low, close, 2, method="simple")[1:].tolist() == [3.5, 4.5]


def test_bollinger_uses_population_stdev():
    lower, middle, upper = ind.bollinger([1, 2, 3, 4, 5], 5, 2.0)
    assert middle[4] == 3.0
    assert upper[4] == pytest.approx(3 + 2 * np.sqrt(2))
    assert lower[4] == pytest.approx(3 - 2 * np.sqrt(2))
    assert np.isnan(upper[:4]).all()


def test_stdev_sample_variant():
    assert ind.stdev([2, 4, 4, 4, 5, 5, 7, 9], 8)[7] == pytest.approx(2.0)
    assert ind.stdev([1, 2, 3], 3, ddof=1)[2] == pytest.approx(1.0)


def test_macd_on_a_straight_line():
    x = np.arange(1.0, 9.0)  # 1..8
    line, signal, hist = ind.macd(x, fast=2, slow=3, signal=2)
    # on a line an EMA lags by a constant: EMA2 = x - 0.5, EMA3 = x - 1 -> MACD 0.5
    assert np.isnan(line[:2]).all()
    np.testing.assert_allclose(line[2:], 0.5)
    assert np.isnan(signal[:3]).all()  # first signal at slow + signal - 2 = 3
    np.testing.assert_allclose(signal[3:], 0.5)
    np.testing.assert_allclose(hist[3:], 0.0)


def test_vwap_cumulative_and_session_reset():
    high, low, close = [3, 6, 9], [3, 6, 9], [3, 6, 9]
    volume = [1.0, 1.0, 2.0]
    assert ind.vwap(high, low, close, volume).tolist() == [3.0, 4.5, 6.75]
    day = 86_400_000
    out = ind.vwap(high, low, close, volume, open_time_ms=[day - 60_000, day, day + 60_000])
    assert out.tolist() == [3.0, 6.0, 8.0]  # the second candle starts a new UTC day


def test_vwap_without_volume_is_nan():
    assert np.isnan(ind.vwap([1.0], [1.0], [1.0], [0.0])).all()


def test_swing_pivots_and_confirmation_delay():
    high = [1, 3, 2, 5, 4, 4, 1]
    assert np.flatnonzero(ind.swing_highs(high, 1, 1)).tolist() == [1, 3]
    low = [5, 3, 4, 1, 2, 2, 6]
    assert np.flatnonzero(ind.swing_lows(low, 1, 1)).tolist() == [1, 3]
    confirmed = ind.last_confirmed(high, ind.swing_highs(high, 1, 1), right=1)
    # the pivot at 1 is known at 2, the pivot at 3 at 4
    assert np.isnan(confirmed[:2]).all()
    assert confirmed[2:].tolist() == [3.0, 3.0, 5.0, 5.0, 5.0]


def test_pct_change_and_rolling_extremes():
    assert ind.pct_change([100, 110, 99], 1)[1:].tolist() == pytest.approx([10.0, -10.0])
    assert ind.rolling_max([1, 3, 2, 0], 2)[1:].tolist() == [3.0, 3.0, 2.0]
    assert ind.rolling_min([1, 3, 2, 0], 2)[1:].tolist() == [1.0, 2.0, 0.0]


def test_crosses():
    a = [1.0, 2.0, 3.0, 2.0, 1.0]
    b = [2.0, 2.0, 2.0, 2.0, 2.0]
    assert np.flatnonzero(ind.crossed_above(a, b)).tolist() == [2]
    assert np.flatnonzero(ind.crossed_below(a, b)).tolist() == [4]
    assert not ind.crossed_above([np.nan, 3.0], [2.0, 2.0]).any()


def test_rolling_values_do_not_depend_on_where_the_array_starts():
    """precompute() over a whole series must give the same floats as analyze() on a window."""
    rng = np.random.default_rng(7)
    x = 20_000 + np.cumsum(rng.normal(0, 15, 5_000))
    full = ind.sma(x, 30)
    for start in (1, 17, 123, 4_000):
        part = ind.sma(x[start:], 30)
        assert np.array_equal(full[start + 29 :], part[29:])
    assert np.array_equal(ind.stdev(x, 20)[500:], ind.stdev(x[300:], 20)[200:])
