"""Trades (history, filters, CSV), metrics (KPIs, equity curve) and the backtest page."""

from __future__ import annotations

import csv
import datetime as dt
import json
from decimal import Decimal
from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_http_methods

from apps.orders.models import Trade
from apps.strategies import registry
from apps.strategies.models import StrategyRun

from . import backtests

CSV_COLUMNS = (
    "closed_at",
    "opened_at",
    "strategy",
    "instrument",
    "side",
    "amount",
    "entry_price",
    "exit_price",
    "exit_reason",
    "pnl",
    "currency",
    "pnl_usd",
    "fees",
    "duration_seconds",
    "run_id",
)


def _parse_date(value: str, field: str) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{field}: not a date (YYYY-MM-DD)") from None


def filtered_trades(params) -> tuple[QuerySet[Trade], dict[str, str], str]:
    filters = {
        k: params.get(k, "").strip()
        for k in ("strategy", "instrument", "side", "exit_reason", "since", "until")
    }
    trades = Trade.objects.annotate(
        strategy=Subquery(StrategyRun.objects.filter(pk=OuterRef("run_id")).values("strategy")[:1])
    ).order_by("-closed_at")
    error = ""
    if filters["strategy"]:
        trades = trades.filter(strategy=filters["strategy"])
    if filters["instrument"]:
        trades = trades.filter(instrument=filters["instrument"])
    if filters["side"] in ("buy", "sell"):
        trades = trades.filter(side=filters["side"])
    if filters["exit_reason"]:
        trades = trades.filter(exit_reason=filters["exit_reason"])
    try:
        since = _parse_date(filters["since"], "From")
        until = _parse_date(filters["until"], "To")
        if since:
            trades = trades.filter(closed_at__date__gte=since)
        if until:
            trades = trades.filter(closed_at__date__lte=until)
    except ValueError as exc:
        error = str(exc)
    return trades, filters, error


@require_GET
def trades(request: HttpRequest) -> HttpResponse:
    queryset, filters, error = filtered_trades(request.GET)
    context = {
        "page": "trades",
        "trades": queryset[:500],
        "filters": filters,
        "filter_error": error,
        "strategies": registry.list_strategies(),
        "instruments": Trade.objects.order_by().values_list("instrument", flat=True).distinct(),
        "exit_reasons": Trade.objects.order_by().values_list("exit_reason", flat=True).distinct(),
    }
    return render(request, "web/trades.html", context)


class _Echo:
    def write(self, value: str) -> str:
        return value


@require_GET
def trades_csv(request: HttpRequest) -> StreamingHttpResponse:
    queryset, _filters, _error = filtered_trades(request.GET)
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(CSV_COLUMNS)
        for trade in queryset.iterator():
            yield writer.writerow([getattr(trade, column) for column in CSV_COLUMNS])

    response = StreamingHttpResponse(rows(), content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="tradebaas-trades.csv"'
    return response


def kpis(trades: list[Trade]) -> tuple[dict[str, Any], list[dict]]:
    pnls = [trade.pnl_usd for trade in trades]
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    equity, peak, max_dd = Decimal(0), Decimal(0), Decimal(0)
    curve = []
    for trade in trades:
        equity += trade.pnl_usd
        peak = max(peak, equity)
        max_dd = max(max_dd, peak - equity)
        curve.append({"time": int(trade.closed_at.timestamp()), "value": float(equity)})
    fees_usd = sum(
        (t.fees * (t.exit_price if t.currency in ("BTC", "ETH") else 1) for t in trades), Decimal(0)
    )
    gross_loss = -sum(losses, Decimal(0))
    summary = {
        "trades": len(trades),
        "net_pnl_usd": sum(pnls, Decimal(0)),
        "win_rate": (Decimal(len(wins)) * 100 / len(trades)) if trades else Decimal(0),
        "profit_factor": f"{sum(wins, Decimal(0)) / gross_loss:.2f}"
        if gross_loss
        else ("∞" if wins else None),
        "max_drawdown_usd": max_dd,
        "fees_usd": fees_usd,
    }
    # lightweight-charts wants strictly increasing times: keep the last value of each second
    unique: dict[int, dict] = {point["time"]: point for point in curve}
    return summary, [unique[t] for t in sorted(unique)]


@require_GET
def performance(request: HttpRequest) -> HttpResponse:
    trades_list = list(Trade.objects.order_by("closed_at"))
    summary, curve = kpis(trades_list)
    return render(
        request,
        "web/performance.html",
        {"page": "performance", "kpis": summary, "equity_json": json.dumps(curve)},
    )


@require_http_methods(["GET", "POST"])
def backtest(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form, errors, job = backtests.start_from_form(request.POST, user=request.user)
        if errors:
            response = render(
                request, "web/partials/backtest_form.html", backtests.form_context(form, errors)
            )
            response["HX-Retarget"] = "#backtest-form"
            response["HX-Reswap"] = "outerHTML"
            return response
        return render(
            request, "web/partials/backtest_progress.html", {"job": backtests.job_view(job)}
        )
    context = {"page": "backtest", **backtests.form_context(backtests.initial_form(), {})}
    return render(request, "web/backtest.html", context)


@require_GET
def backtest_status(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(backtests.BacktestJob, pk=job_id)
    return render(request, "web/partials/backtest_progress.html", {"job": backtests.job_view(job)})


@require_GET
def backtest_chart(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(backtests.BacktestJob, pk=job_id)
    if not job.chart_path:
        raise Http404("no chart yet")
    return FileResponse(open(job.chart_path, "rb"), content_type="image/png")
