"""Files a backtest leaves behind: the trade list (CSV) and the equity curve (PNG). Pure."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

from apps.strategies.backtest import BacktestResult

TRADE_COLUMNS = (
    "number", "side", "entry_time", "exit_time", "entry_price", "exit_price",
    "amount", "pnl", "fees", "net", "reason", "signal",
)  # fmt: skip


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def write_trades_csv(result: BacktestResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(TRADE_COLUMNS)
        for trade in result.trades:
            row = trade.as_row()
            row["entry_time"] = _iso(trade.entry_time_ms)
            row["exit_time"] = _iso(trade.exit_time_ms)
            writer.writerow([row[c] for c in TRADE_COLUMNS])
    return path


def plot_equity(result: BacktestResult, path: Path) -> Path:
    """Equity at each close, marked to market, with each trade's exit marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    times = (result.equity_times_ms.astype("datetime64[ms]")).astype(object)
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=100)
    ax.plot(times, result.equity_curve, linewidth=1.0, color="#2563eb", label="equity")
    peaks = np.maximum.accumulate(result.equity_curve)
    ax.fill_between(
        times, result.equity_curve, peaks, color="#ef4444", alpha=0.15, label="drawdown"
    )
    ax.set_title(
        f"{result.strategy} on {result.instrument}: {len(result.trades)} trades, "
        f"net {result.net_pnl:.6f} {result.currency}, max drawdown {result.max_drawdown:.2f} %"
    )
    ax.set_ylabel(f"equity ({result.currency})")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def output_paths(out: str | Path) -> tuple[Path, Path]:
    """``--out results/ma`` → ``results/ma.csv`` (trades) and ``results/ma.png`` (chart)."""
    base = Path(out)
    if base.suffix.lower() in (".csv", ".png", ".json"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".csv"), base.with_name(base.name + ".png")
