"""A backtest started from the page runs on a real worker and leaves its result and chart."""

from __future__ import annotations

import pytest

from apps.strategies.backtest import BacktestConfig, run_backtest
from apps.strategies.candle_csv import load_csv
from apps.strategies.registry import get_strategy
from apps.web.backtests import SAMPLE_DIR
from apps.web.models import BacktestJob
from tradebaas.testing import celery_argv, child_env, running_process, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_backtest_from_the_page_runs_on_the_default_worker(auth_client, tmp_path):
    with running_process(
        celery_argv("default", "bt-default"), child_env(), tmp_path / "worker.log"
    ):
        response = auth_client.post(
            "/web/backtest/",
            {
                "strategy": "ma_cross",
                "data": "btcusdt-1m-sample.csv",
                "instrument": "BTC-PERPETUAL",
                "risk_mode": "percent",
                "risk_value": "1",
                "equity": "1",
                "params": "",
            },
        )
        assert response.status_code == 200
        job = BacktestJob.objects.get()
        wait_for(
            lambda: BacktestJob.objects.get(pk=job.pk).status in ("done", "failed"),
            timeout=120,
            what="the backtest job to finish",
        )
    job.refresh_from_db()
    assert job.status == "done", job.error
    assert job.result["candles"] > 1000
    # the worker ran the same backtest the command line runs
    direct = run_backtest(
        get_strategy("ma_cross"), load_csv(SAMPLE_DIR / "btcusdt-1m-sample.csv"), BacktestConfig()
    )
    assert job.result["trades"] == len(direct.trades)
    assert job.result["net_pnl"] == str(direct.net_pnl)
    page = auth_client.get(f"/web/backtest/{job.pk}").content.decode()
    assert 'data-status="done"' in page and 'id="bt-chart"' in page
    chart = auth_client.get(f"/web/backtest/{job.pk}/chart.png")
    assert chart.status_code == 200 and b"".join(chart.streaming_content).startswith(b"\x89PNG")
