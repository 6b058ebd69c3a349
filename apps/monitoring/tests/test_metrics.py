"""/metrics of web (with scrape-time numbers from the database and Redis) and of a real worker."""

from __future__ import annotations

import urllib.request

import pytest

from apps.monitoring.health import record_heartbeat
from apps.monitoring.tasks import ping
from apps.strategies import services
from tradebaas.testing import celery_argv, child_env, free_port, running_process, wait_for


@pytest.mark.django_db
def test_web_metrics_show_database_state_and_heartbeats(client, settings):
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1"]
    services.run_start(strategy="fast_test", params={}, instrument="BTC-PERPETUAL")
    record_heartbeat("beat")
    body = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    assert 'tradebaas_active_run_state{state="IDLE"} 1.0' in body
    assert 'tradebaas_active_run_state{state="ERROR"} 0.0' in body
    assert 'tradebaas_db_brackets{state="OPEN"} 0.0' in body
    assert 'tradebaas_db_trades{result="win"} 0.0' in body
    assert 'tradebaas_process_heartbeat_age_seconds{process="beat"}' in body
    assert "tradebaas_candle_to_bracket_seconds_bucket" in body


@pytest.mark.django_db
def test_metrics_refuse_other_addresses(client, settings):
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_serves_the_metrics_of_its_child_processes(tmp_path):
    port = free_port()
    env = child_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path), TRADEBAAS_METRICS_PORT=str(port))
    argv = celery_argv("default", "t-metrics", concurrency=2)
    with running_process(argv, env, tmp_path / "worker.log"):
        for n in range(3):
            assert ping.apply_async(args=[str(n)], queue="default").get(timeout=60)["value"] == str(
                n
            )

        def scrape():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    body = r.read().decode()
            except OSError:
                return None
            line = 'tradebaas_celery_tasks_total{state="SUCCESS",task="apps.monitoring.tasks.ping"} 3.0'
            return body if line in body else None

        body = wait_for(scrape, timeout=20, what="worker metrics with 3 pings")
        assert "tradebaas_broker_request_seconds" in body or "tradebaas_celery_tasks_total" in body
