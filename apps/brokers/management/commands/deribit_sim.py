"""``python manage.py deribit_sim``: serve the exchange simulator as Deribit API v2 on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.brokers.simulator.deribit_server import DeribitSimServer, SimOptions
from apps.brokers.simulator.feed import SAMPLE_CANDLES


def parse_balances(values: list[str]) -> dict[str, Decimal]:
    """``["BTC=1", "USDC=5000"]`` -> ``{"BTC": Decimal("1"), "USDC": Decimal("5000")}``."""
    balances: dict[str, Decimal] = {}
    for value in values:
        for item in value.split(","):
            currency, sep, amount = item.partition("=")
            if not sep or not currency.strip():
                raise CommandError(f"--balance wants CURRENCY=AMOUNT, got {item!r}")
            try:
                balances[currency.strip().upper()] = Decimal(amount.strip())
            except InvalidOperation:
                raise CommandError(f"--balance amount is not a number: {item!r}") from None
    return balances


def sim_options_from(options: dict[str, Any]) -> SimOptions:
    """The simulator's options from the command's parsed flags (CommandError on bad ones)."""
    data = None if options["static"] else options["data"]
    if data and not Path(data).is_file():
        raise CommandError(f"--data {data}: no such file")
    if options["speed"] < 0:
        raise CommandError("--speed must be >= 0")
    sim_options = SimOptions(
        client_id=options["client_id"],
        client_secret=options["client_secret"],
        testnet=not options["mainnet"],
        token_ttl=options["token_ttl"],
        data_path=data,
        speed=options["speed"],
        history_candles=options["history"],
        loop=options["loop"],
        rate_limits=((5, 20), (20, 100)) if options["rate_limits"] else None,
    )
    balances = parse_balances(options["balance"])
    if balances:
        sim_options.balances = {**sim_options.balances, **balances}
    return sim_options


class Command(BaseCommand):
    help = "Serve the exchange simulator as Deribit API v2 (WebSocket + HTTP) with /_sim/ faults."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument(
            "--data",
            default=str(SAMPLE_CANDLES),
            help="CSV of 1-minute candles (open_time,open,high,low,close,volume); "
            "default: the shipped two-day sample",
        )
        parser.add_argument(
            "--static",
            action="store_true",
            help="no candles: prices stand still until /_sim/price moves them",
        )
        parser.add_argument(
            "--speed",
            type=float,
            default=60.0,
            help="replay speed: 1 = real time, 60 = a minute per second, 0 = as fast as possible",
        )
        parser.add_argument(
            "--history",
            type=int,
            default=500,
            help="candles of the file already in the past when the replay starts",
        )
        parser.add_argument("--loop", action="store_true", help="replay the data again at its end")
        parser.add_argument("--client-id", default="paper")
        parser.add_argument("--client-secret", default="paper")
        parser.add_argument(
            "--balance",
            action="append",
            default=[],
            metavar="CUR=AMOUNT",
            help="starting balance, repeatable (default BTC=1 ETH=10 USDC=100000)",
        )
        parser.add_argument("--token-ttl", type=float, default=900.0, help="access token life (s)")
        parser.add_argument(
            "--rate-limits",
            action="store_true",
            help="enforce Deribit's default limits (5/s burst 20 for orders, 20/s burst 100 else)",
        )
        parser.add_argument("--mainnet", action="store_true", help='answer "testnet": false')

    def handle(self, *args: Any, **options: Any) -> None:
        sim_options = sim_options_from(options)
        asyncio.run(self._serve(sim_options, options["host"], options["port"]))

    async def _serve(self, sim_options: SimOptions, host: str, port: int) -> None:
        server = DeribitSimServer(sim_options)
        runner, bound = await server.start(host, port)
        self.stdout.write(
            f"Deribit simulator on ws://{host}:{bound}/ws/api/v2 and http://{host}:{bound}/api/v2/"
            f" (faults: http://{host}:{bound}/_sim/)"
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            self.stdout.write("Deribit simulator stopped")
