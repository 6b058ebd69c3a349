"""``python manage.py backtest STRATEGY --data PATH.csv``: replay candles through a strategy,
the risk sizing and the simulator engine; print the figures (or ``--json``), and with
``--out PATH`` write PATH.csv (trades) and PATH.png (equity curve)."""

from __future__ import annotations

import json
import sys
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.strategies.backtest import BacktestConfig, BacktestError, run_backtest
from apps.strategies.backtest_report import output_paths, plot_equity, write_trades_csv
from apps.strategies.base import ParamError
from apps.strategies.candle_csv import CandleFileError, load_csv
from apps.strategies.registry import UnknownStrategy, get_strategy, strategy_ids


def _decimal(name: str, text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise CommandError(f"--{name} must be a number, not {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise CommandError(f"--{name} must be a positive number")
    return value


class ProgressBar:
    """A one-line bar on stderr, redrawn at most every 1 %."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        percent = int(100 * done / total) if total else 100
        if percent == self.shown:
            return
        self.shown = percent
        filled = percent * 40 // 100
        self.stream.write(f"\r[{'#' * filled}{'.' * (40 - filled)}] {percent:3d}% {done}/{total}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


class Command(BaseCommand):
    help = "Backtest a strategy over a candle CSV with the same sizing and fills as paper trading."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("strategy", help=f"one of: {', '.join(strategy_ids())}")
        parser.add_argument(
            "--data", required=True, help="OHLCV CSV (open_time,open,high,low,close[,volume])"
        )
        parser.add_argument(
            "--params", default="{}", help="strategy parameters as JSON, e.g. '{\"fast\": 5}'"
        )
        parser.add_argument("--instrument", default="BTC-PERPETUAL")
        parser.add_argument("--risk-mode", choices=("percent", "fixed"), default="percent")
        parser.add_argument(
            "--risk-value", default="1", help="percent of equity, or USD when fixed"
        )
        parser.add_argument(
            "--equity", default="1", help="starting balance in the settlement currency"
        )
        parser.add_argument("--leverage-cap", default="50")
        parser.add_argument(
            "--include-fees", action="store_true", help="size with fees inside the risk"
        )
        parser.add_argument(
            "--slow", action="store_true", help="analyse every candle (no precompute)"
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument("--out", help="write OUT.csv (trades) and OUT.png (equity curve)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            params = json.loads(options["params"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params is not valid JSON: {exc}") from None
        try:
            strategy = get_strategy(options["strategy"], params)
        except UnknownStrategy as exc:
            raise CommandError(f"{exc}; known: {', '.join(strategy_ids())}") from None
        except ParamError as exc:
            raise CommandError(f"bad parameter {exc.field}: {exc.message}") from None
        try:
            candles = load_csv(options["data"])
        except CandleFileError as exc:
            raise CommandError(str(exc)) from None
        config = BacktestConfig(
            instrument=options["instrument"],
            equity=_decimal("equity", options["equity"]),
            risk_mode=options["risk_mode"],
            risk_value=_decimal("risk-value", options["risk_value"]),
            leverage_cap=_decimal("leverage-cap", options["leverage_cap"]),
            include_fees=options["include_fees"],
            fast=not options["slow"],
        )
        progress = ProgressBar(sys.stderr) if sys.stderr.isatty() and not options["json"] else None
        try:
            result = run_backtest(strategy, candles, config, progress)
        except BacktestError as exc:
            raise CommandError(str(exc)) from None
        summary = result.summary()
        if options["out"]:
            trades_path, chart_path = output_paths(options["out"])
            write_trades_csv(result, trades_path)
            plot_equity(result, chart_path)
            summary["trades_csv"] = str(trades_path)
            summary["equity_png"] = str(chart_path)
        if options["json"]:
            self.stdout.write(json.dumps(summary))
            return
        self.stdout.write(self._human(summary, result))

    @staticmethod
    def _human(summary: dict[str, Any], result: Any) -> str:
        cur = summary["currency"]
        pf = summary["profit_factor"]
        lines = [
            f"{summary['strategy']} on {summary['instrument']} {summary['params']}",
            f"  candles            {summary['candles']}",
            f"  trades             {summary['trades']} ({summary['refused']} signals refused)",
            f"  win rate           {summary['win_rate']:.2f} %",
            f"  net P&L            {summary['net_pnl']} {cur}",
            f"  fees               {summary['fees']} {cur}",
            f"  profit factor      {'n/a' if pf is None else f'{pf:.3f}'}",
            f"  max drawdown       {summary['max_drawdown']:.2f} %",
            f"  exposure           {summary['exposure']:.2f} %",
            f"  equity             {summary['start_equity']} -> {summary['end_equity']} {cur}",
            f"  speed              {summary['candles_per_second']:,.0f} candles/s",
        ]
        if "trades_csv" in summary:
            lines.append(f"  trades written to  {summary['trades_csv']}")
            lines.append(f"  chart written to   {summary['equity_png']}")
        return "\n".join(lines)
