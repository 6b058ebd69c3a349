"""Technical indicators on numpy arrays. Pure: no Django, no pandas.

Every function takes 1-D float arrays and returns arrays of the same length. A value that
cannot be computed yet (the warm-up) is ``NaN``, never a guess: an ``n``-period SMA has its
first value at index ``n - 1``.

Rolling sums are computed as ``n`` element-wise additions of shifted slices, in the same
order for every index. A value therefore depends only on the ``n`` inputs it covers, not on
where the array starts — which is what lets a strategy compute its decisions once over a
whole backtest (``precompute``) and get the very same floats as ``analyze`` on a short
window of the same candles.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]


def _f64(x: ArrayLike) -> Array:
    return np.asarray(x, dtype=np.float64)


def _check_period(n: int) -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"period must be a positive integer, got {n!r}")


def _nan(length: int) -> Array:
    return np.full(length, np.nan, dtype=np.float64)


def rolling_sum(x: ArrayLike, n: int) -> Array:
    """Sum of the last ``n`` values; NaN for the first ``n - 1``."""
    _check_period(n)
    x = _f64(x)
    out = _nan(len(x))
    m = len(x) - n + 1
    if m <= 0:
        return out
    acc = x[0:m].copy()
    for k in range(1, n):
        acc += x[k : k + m]
    out[n - 1 :] = acc
    return out


def sma(x: ArrayLike, n: int) -> Array:
    """Simple moving average of the last ``n`` values."""
    return rolling_sum(x, n) / n


def rolling_max(x: ArrayLike, n: int) -> Array:
    _check_period(n)
    x = _f64(x)
    out = _nan(len(x))
    if len(x) >= n:
        out[n - 1 :] = np.lib.stride_tricks.sliding_window_view(x, n).max(axis=1)
    return out


def rolling_min(x: ArrayLike, n: int) -> Array:
    _check_period(n)
    x = _f64(x)
    out = _nan(len(x))
    if len(x) >= n:
        out[n - 1 :] = np.lib.stride_tricks.sliding_window_view(x, n).min(axis=1)
    return out


def stdev(x: ArrayLike, n: int, ddof: int = 0) -> Array:
    """Rolling standard deviation (population by default, as Bollinger bands use)."""
    _check_period(n)
    if n - ddof < 1:
        raise ValueError("n must exceed ddof")
    x = _f64(x)
    out = _nan(len(x))
    if len(x) >= n:
        windows = np.lib.stride_tricks.sliding_window_view(x, n)
        mean = sma(x, n)[n - 1 :]
        dev = windows - mean[:, None]
        out[n - 1 :] = np.sqrt((dev * dev).sum(axis=1) / (n - ddof))
    return out


def ema(x: ArrayLike, n: int) -> Array:
    """Exponential moving average, alpha = 2 / (n + 1), seeded with the SMA of the first ``n``.

    The first value is at index ``n - 1`` (the seed); NaN before. A NaN input after the seed
    propagates, as it should.
    """
    _check_period(n)
    x = _f64(x)
    return _recursive_average(x, n, 2.0 / (n + 1))


def wilder(x: ArrayLike, n: int) -> Array:
    """Wilder's smoothing (alpha = 1 / n), seeded with the SMA of the first ``n``."""
    _check_period(n)
    x = _f64(x)
    return _recursive_average(x, n, 1.0 / n)


def _recursive_average(x: Array, n: int, alpha: float) -> Array:
    out = _nan(len(x))
    if len(x) < n:
        return out
    values = x.tolist()
    # sum() adds left to right like rolling_sum, so the seed equals sma(x, n)[n - 1] exactly
    seed = sum(values[:n]) / n
    result = [seed]
    prev = seed
    keep = 1.0 - alpha
    for value in values[n:]:
        prev = alpha * value + keep * prev
        result.append(prev)
    out[n - 1 :] = result
    return out


def _rsi_from_averages(gain: Array, loss: Array) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = 100.0 - 100.0 / (1.0 + gain / loss)
    # No losses: 100 if it went up, 50 if it did not move at all.
    flat = (loss == 0) & ~np.isnan(gain)
    rsi[flat & (gain > 0)] = 100.0
    rsi[flat & (gain == 0)] = 50.0
    return rsi


def rsi(x: ArrayLike, n: int = 14, method: str = "wilder") -> Array:
    """Relative Strength Index of closes.

    ``method="wilder"``: averages seeded with the mean of the first ``n`` changes, then
    smoothed with alpha = 1/n (Wilder 1978; StockCharts' worked example).
    ``method="simple"``: plain means of the last ``n`` gains and losses (Cutler's RSI, what
    the original Razor computed).
    Both have their first value at index ``n`` (``n`` changes need ``n + 1`` closes).
    """
    _check_period(n)
    if method not in ("wilder", "simple"):
        raise ValueError(f"unknown RSI method {method!r}: use 'wilder' or 'simple'")
    x = _f64(x)
    out = _nan(len(x))
    if len(x) <= n:
        return out
    change = np.diff(x)
    gains = np.where(change > 0, change, 0.0)
    losses = np.where(change < 0, -change, 0.0)
    if method == "wilder":
        avg_gain, avg_loss = wilder(gains, n), wilder(losses, n)
    else:
        avg_gain, avg_loss = sma(gains, n), sma(losses, n)
    out[1:] = _rsi_from_averages(avg_gain, avg_loss)
    return out


def true_range(high: ArrayLike, low: ArrayLike, close: ArrayLike) -> Array:
    """max(high - low, |high - previous close|, |low - previous close|); the first is high - low."""
    high, low, close = _f64(high), _f64(low), _f64(close)
    tr = high - low
    if len(tr) > 1:
        prev = close[:-1]
        tr[1:] = np.maximum.reduce([tr[1:], np.abs(high[1:] - prev), np.abs(low[1:] - prev)])
    return tr


def atr(
    high: ArrayLike, low: ArrayLike, close: ArrayLike, n: int = 14, method: str = "wilder"
) -> Array:
    """Average True Range: the first value (index ``n - 1``) is the mean of the first ``n`` true
    ranges (StockCharts), then Wilder-smoothed; ``method="simple"`` is a plain rolling mean."""
    tr = true_range(high, low, close)
    if method == "wilder":
        return wilder(tr, n)
    if method == "simple":
        return sma(tr, n)
    raise ValueError(f"unknown ATR method {method!r}: use 'wilder' or 'simple'")


def bollinger(x: ArrayLike, n: int = 20, k: float = 2.0) -> tuple[Array, Array, Array]:
    """Bollinger bands: (lower, middle, upper) = SMA ∓ k × population stdev."""
    middle = sma(x, n)
    width = k * stdev(x, n)
    return middle - width, middle, middle + width


def macd(
    x: ArrayLike, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[Array, Array, Array]:
    """MACD line (EMA fast − EMA slow), its signal line (EMA of the MACD line, seeded once the
    line exists) and the histogram. The signal's first value is at ``slow + signal - 2``."""
    if fast >= slow:
        raise ValueError("fast period must be shorter than the slow period")
    x = _f64(x)
    line = ema(x, fast) - ema(x, slow)
    sig = _nan(len(x))
    start = slow - 1
    if len(x) > start:
        sig[start:] = ema(line[start:], signal)
    return line, sig, line - sig


def vwap(
    high: ArrayLike,
    low: ArrayLike,
    close: ArrayLike,
    volume: ArrayLike,
    open_time_ms: ArrayLike | None = None,
    session_ms: int = 86_400_000,
) -> Array:
    """Volume-weighted average of the typical price (H+L+C)/3.

    With ``open_time_ms`` it resets at each session boundary (UTC day by default), as
    exchanges show it; without, it accumulates from the first candle. NaN while a session
    has had no volume.
    """
    high, low, close, volume = _f64(high), _f64(low), _f64(close), _f64(volume)
    typical = (high + low + close) / 3.0
    pv = np.cumsum(typical * volume)
    vol = np.cumsum(volume)
    if open_time_ms is not None and len(high):
        session = np.asarray(open_time_ms, dtype=np.int64) // session_ms
        starts = np.flatnonzero(np.r_[True, session[1:] != session[:-1]])
        idx = np.repeat(starts, np.diff(np.r_[starts, len(session)]))
        pv_before = np.r_[0.0, pv][idx]
        vol_before = np.r_[0.0, vol][idx]
        pv, vol = pv - pv_before, vol - vol_before
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(vol > 0, pv / vol, np.nan)


def pct_change(x: ArrayLike, n: int = 1) -> Array:
    """Percent change over ``n`` candles: (x[i] - x[i-n]) / x[i-n] × 100."""
    _check_period(n)
    x = _f64(x)
    out = _nan(len(x))
    if len(x) > n:
        out[n:] = (x[n:] - x[:-n]) / x[:-n] * 100.0
    return out


def swing_highs(high: ArrayLike, left: int = 2, right: int = 2) -> NDArray[np.bool_]:
    """True at a pivot high: strictly above the ``left`` highs before it and the ``right`` after.

    A pivot at ``i`` is only *known* at ``i + right``; a strategy deciding at candle ``t`` may
    use pivots up to ``t - right`` only (see :func:`last_confirmed`).
    """
    return _pivots(_f64(high), left, right, np.greater)


def swing_lows(low: ArrayLike, left: int = 2, right: int = 2) -> NDArray[np.bool_]:
    """True at a pivot low: strictly below the ``left`` lows before and the ``right`` after."""
    return _pivots(_f64(low), left, right, np.less)


def _pivots(x: Array, left: int, right: int, better: np.ufunc) -> NDArray[np.bool_]:
    if left < 1 or right < 0:
        raise ValueError("left must be >= 1 and right >= 0")
    out = np.zeros(len(x), dtype=bool)
    m = len(x) - left - right
    if m <= 0:
        return out
    centre = x[left : left + m]
    ok = np.ones(m, dtype=bool)
    for k in range(-left, right + 1):
        if k:
            ok &= better(centre, x[left + k : left + k + m])
    out[left : left + m] = ok
    return out


def last_confirmed(values: ArrayLike, pivots: NDArray[np.bool_], right: int) -> Array:
    """For each index t: the value of the latest pivot at or before ``t - right``, else NaN."""
    values = _f64(values)
    out = _nan(len(values))
    idx = np.where(pivots, np.arange(len(values)), -1)
    latest = np.maximum.accumulate(idx) if len(idx) else idx
    if right:
        shifted = np.full(len(values), -1)
        shifted[right:] = latest[:-right]
        latest = shifted
    has = latest >= 0
    out[has] = values[latest[has]]
    return out


def crossed_above(a: ArrayLike, b: ArrayLike) -> NDArray[np.bool_]:
    """True at i when a[i-1] <= b[i-1] and a[i] > b[i] (NaN anywhere: False)."""
    a, b = _f64(a), _f64(b)
    out = np.zeros(len(a), dtype=bool)
    if len(a) > 1:
        out[1:] = (a[:-1] <= b[:-1]) & (a[1:] > b[1:])
    return out


def crossed_below(a: ArrayLike, b: ArrayLike) -> NDArray[np.bool_]:
    """True at i when a[i-1] >= b[i-1] and a[i] < b[i] (NaN anywhere: False)."""
    a, b = _f64(a), _f64(b)
    out = np.zeros(len(a), dtype=bool)
    if len(a) > 1:
        out[1:] = (a[:-1] >= b[:-1]) & (a[1:] < b[1:])
    return out
