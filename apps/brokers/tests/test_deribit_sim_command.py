"""``manage.py deribit_sim``: the simulator as its own process, replaying the shipped sample."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management.base import CommandError

from apps.brokers.management.commands.deribit_sim import (
    Command,
    parse_balances,
    sim_options_from,
)
from apps.brokers.simulator.feed import SAMPLE_CANDLES
from apps.brokers.tests.deribit_raw import RawClient

ROOT = Path(__file__).resolve().parents[3]


def test_parse_balances():
    assert parse_balances(["BTC=2", "usdc=5000,ETH=0.5"]) == {
        "BTC": Decimal("2"),
        "USDC": Decimal("5000"),
        "ETH": Decimal("0.5"),
    }
    with pytest.raises(CommandError):
        parse_balances(["BTC"])
    with pytest.raises(CommandError):
        parse_balances(["BTC=lots"])


def parsed(*argv: str) -> dict:
    parser = Command().create_parser("manage.py", "deribit_sim")
    return vars(parser.parse_args(argv))


def test_flags_become_simulator_options():
    default = sim_options_from(parsed())
    assert default.data_path == str(SAMPLE_CANDLES)
    assert (default.speed, default.history_candles, default.loop) == (60.0, 500, False)
    assert (default.client_id, default.client_secret, default.testnet) == ("paper", "paper", True)
    assert default.balances == {"BTC": Decimal(1), "ETH": Decimal(10), "USDC": Decimal(100000)}
    assert default.rate_limits is None
    custom = sim_options_from(
        parsed("--static", "--balance", "BTC=2", "--mainnet", "--rate-limits", "--loop")
    )
    assert custom.data_path is None
    assert custom.balances["BTC"] == Decimal(2) and custom.balances["ETH"] == Decimal(10)
    assert custom.testnet is False and custom.loop is True
    assert custom.rate_limits == ((5, 20), (20, 100))
    with pytest.raises(CommandError):
        sim_options_from(parsed("--data", "/nonexistent.csv"))
    with pytest.raises(CommandError):
        sim_options_from(parsed("--speed", "-1"))


@pytest.mark.slow
async def test_command_serves_replays_and_stops_on_sigterm():
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "deribit_sim",
            "--port",
            "0",
            "--data",
            str(SAMPLE_CANDLES),
            "--speed",
            "600",
            "--history",
            "100",
            "--balance",
            "BTC=3",
            "--client-secret",
            "s3cret",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tradebaas.settings.test"},
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
        match = re.search(r"ws://127\.0\.0\.1:(\d+)/ws/api/v2", line)
        assert match, f"no URL in {line!r}"
        client = await RawClient.connect(match.group(0))
        try:
            await client.auth("paper", "s3cret")
            summary = await client.result("private/get_account_summary", {"currency": "BTC"})
            assert summary["balance"] == 3
            history = await client.result(
                "public/get_tradingview_chart_data",
                {
                    "instrument_name": "BTC-PERPETUAL",
                    "start_timestamp": 0,
                    "end_timestamp": await client.result("public/get_time"),
                    "resolution": "1",
                },
            )
            assert len(history["ticks"]) >= 100
            await client.result("public/subscribe", {"channels": ["chart.trades.BTC-PERPETUAL.1"]})
            ticks = set()
            async with asyncio.timeout(10):
                while len(ticks) < 3:
                    message = await client.notification("chart.trades.BTC-PERPETUAL.1")
                    ticks.add(message["params"]["data"]["tick"])
        finally:
            await client.close()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
