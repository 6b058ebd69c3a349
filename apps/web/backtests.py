"""Backtests started from the page: validated here, run by a Celery task on the default queue,
progress and result kept on a BacktestJob row that the page polls."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.urls import reverse

from apps.brokers.simulator.instruments import default_specs
from apps.strategies import registry
from apps.strategies.base import ParamError

from .models import BacktestJob

SAMPLE_DIR = Path(settings.BASE_DIR) / "apps" / "brokers" / "simulator" / "sample_data"
SHARED_DATA = Path(settings.BASE_DIR).parent / "shared" / "data"
OUTPUT_DIR = Path(settings.DATA_DIR) / "backtests"


def datasets() -> list[dict[str, str]]:
    """CSV files a backtest may read: the project's sample and, when present, the shared data."""
    found = []
    for folder in (SAMPLE_DIR, SHARED_DATA):
        if folder.is_dir():
            for path in sorted(folder.glob("*.csv")):
                found.append(
                    {"id": path.name, "name": f"{path.name} ({folder.name})", "path": str(path)}
                )
    return found


def _dataset_path(dataset_id: str) -> str | None:
    return next((d["path"] for d in datasets() if d["id"] == dataset_id), None)


def initial_form() -> dict[str, Any]:
    sets = datasets()
    return {
        "strategy": "ma_cross",
        "data": sets[0]["id"] if sets else "",
        "instrument": "BTC-PERPETUAL",
        "risk_mode": "percent",
        "risk_value": "1",
        "equity": "1",
        "params": "",
    }


def form_context(form: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    return {
        "form": form,
        "form_errors": errors,
        "strategies": registry.list_strategies(),
        "datasets": datasets(),
        "instruments": list(default_specs().values()),
    }


def _decimal(value: str, field: str, errors: dict[str, str], *, positive: bool = True) -> Decimal:
    try:
        number = Decimal(value)
        if not number.is_finite() or (positive and number <= 0):
            raise InvalidOperation
        return number
    except (InvalidOperation, ValueError):
        errors[field] = "Enter a positive number."
        return Decimal(0)


def start_from_form(data, *, user) -> tuple[dict[str, Any], dict[str, str], BacktestJob | None]:
    form = {key: data.get(key, "").strip() for key in initial_form()}
    errors: dict[str, str] = {}
    params: dict[str, Any] = {}
    if form["params"]:
        try:
            params = json.loads(form["params"])
            if not isinstance(params, dict):
                raise ValueError
        except ValueError:
            errors["params"] = 'Parameters must be a JSON object, e.g. {"fast": 10}.'
    try:
        if not errors.get("params"):
            params = registry.get_strategy(form["strategy"], params).params
    except registry.UnknownStrategy:
        errors["strategy"] = f"Unknown strategy {form['strategy']!r}."
    except ParamError as exc:
        errors["params"] = f"{exc.field}: {exc.message}"
    path = _dataset_path(form["data"])
    if path is None:
        errors["data"] = "Pick one of the listed data files."
    if form["instrument"] not in default_specs():
        errors["instrument"] = "Unknown instrument."
    if form["risk_mode"] not in ("percent", "fixed"):
        errors["risk_mode"] = "Risk is a percent of equity or a fixed amount."
    risk_value = _decimal(form["risk_value"], "risk_value", errors)
    if form["risk_mode"] == "percent" and risk_value > 100:
        errors["risk_value"] = "A percentage of equity is at most 100."
    equity = _decimal(form["equity"], "equity", errors)
    if errors:
        return form, errors, None
    job = BacktestJob.objects.create(
        created_by=user if getattr(user, "pk", None) else None,
        strategy=form["strategy"],
        params=dict(params),
        dataset=form["data"],
        instrument=form["instrument"],
        risk_mode=form["risk_mode"],
        risk_value=risk_value,
        equity=equity,
    )
    from .tasks import backtest_job_run

    transaction.on_commit(lambda: backtest_job_run.delay(job.pk))
    return form, {}, job


def job_view(job: BacktestJob) -> dict[str, Any]:
    return {
        "id": job.pk,
        "status": job.status,
        "progress": job.progress,
        "result": job.result,
        "error": job.error,
        "chart_url": reverse("web:backtest-chart", args=[job.pk]) if job.chart_path else "",
    }


def run_job(job_id: int) -> str:
    from apps.strategies.backtest import BacktestConfig, BacktestError, run_backtest
    from apps.strategies.backtest_report import plot_equity
    from apps.strategies.candle_csv import load_csv

    job = BacktestJob.objects.get(pk=job_id)
    BacktestJob.objects.filter(pk=job_id).update(status=BacktestJob.Status.RUNNING)
    last = {"percent": -1}

    def progress(done: int, total: int) -> None:
        percent = int(done * 100 / total) if total else 100
        if percent >= last["percent"] + 5:
            last["percent"] = percent
            BacktestJob.objects.filter(pk=job_id).update(progress=percent)

    try:
        candles = load_csv(_dataset_path(job.dataset) or job.dataset)
        strategy = registry.get_strategy(job.strategy, job.params)
        config = BacktestConfig(
            instrument=job.instrument,
            equity=job.equity,
            risk_mode=job.risk_mode,
            risk_value=job.risk_value,
        )
        result = run_backtest(strategy, candles, config, progress=progress)
        out_dir = OUTPUT_DIR
        out_dir.mkdir(parents=True, exist_ok=True)
        chart = out_dir / f"backtest-{job_id}.png"
        plot_equity(result, chart)
        BacktestJob.objects.filter(pk=job_id).update(
            status=BacktestJob.Status.DONE,
            progress=100,
            result=result.summary(),
            chart_path=str(chart),
        )
        return "done"
    except (BacktestError, ValueError, OSError) as exc:
        BacktestJob.objects.filter(pk=job_id).update(
            status=BacktestJob.Status.FAILED, error=str(exc)
        )
        return "failed"
