"""Soak: the whole stack against the Deribit simulator replaying the 30,240-candle file.

Starts a scratch database, the Deribit simulator (``manage.py deribit_sim``) replaying the file at
``--speed`` (× real time), connects a Deribit account to it, starts the whole stack under
``tradebaas/supervisor.py`` (web, runner, worker, beat, telegram) and a FastTest run on
BTC-PERPETUAL, and samples every process's memory until the replay ends. Then it stops the run and
checks:

- every closed bracket has its trade in history, and every fill on the exchange belongs to a bracket
  of ours;
- no orphan order: every open order on the exchange belongs to a live bracket;
- no intent armed ahead is left once the run has stopped;
- memory is flat: each process's RSS over the last fifth of the run vs the second fifth
  (after warm-up) grows by less than ``--max-growth-mb``;
- no process restarted (the supervisor log shows no exit).

It prints the figures and exits non-zero when a check fails.

    .venv/bin/python bench/soak.py [--speed 3000] [--data PATH]

24 hours: ``--speed 21`` replays the 30,240 minutes in 24 h (one candle every 2.86 s, ~21× real
time); ``--speed 600 --loop --hours 24`` replays it again and again for 24 h at 10 candles/s.
Run it under ``nohup`` or ``systemd-run --user``; the figures are printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.request
from pathlib import Path

from _stack import PYTHON, ROOT, Stack, free_port, process_tree, rss_bytes

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "btcusdt-1m-2023-03-01_21.csv"
STARTED = re.compile(r"started (\w+) \(pid (\d+)\)")


def sim_state(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/state", timeout=10) as response:
        return json.loads(response.read())


def children(log: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    for name, pid in STARTED.findall(log.read_text(errors="replace")):
        found[name] = int(pid)
    return found


def tree_rss_mb(pid: int) -> float:
    return sum(rss_bytes(p) for p in process_tree(pid)) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--speed", type=float, default=3000)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--loop", action="store_true", help="replay the file again at its end")
    parser.add_argument("--hours", type=float, default=0, help="with --loop: stop after this long")
    parser.add_argument("--max-growth-mb", type=float, default=20)
    parser.add_argument("--sample-every", type=float, default=5)
    args = parser.parse_args()
    if not args.data.is_file():
        print(f"no candle file at {args.data}: pass --data")
        return 2

    sim_port, web_port = free_port(), free_port()
    env = {
        "TRADEBAAS_DERIBIT_URL": f"ws://127.0.0.1:{sim_port}/ws/api/v2",
        "LOG_LEVEL": "INFO",
    }
    failures: list[str] = []
    with Stack("soak", extra_env=env) as stack:
        sim_argv = [PYTHON, "manage.py", "deribit_sim", "--port", str(sim_port), "--data",
                    str(args.data), "--speed", str(args.speed), "--history", "500"]  # fmt: skip
        if args.loop:
            sim_argv.append("--loop")
        stack.start("simulator", sim_argv)
        deadline = time.monotonic() + 60
        while True:
            try:
                sim_state(sim_port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

        from apps.brokers.services import broker_account_connect
        from apps.strategies import services

        broker_account_connect(
            broker_id="deribit", api_key="paper", api_secret="paper", testnet=True, label="soak"
        )
        supervisor = stack.start(
            "supervisor", [PYTHON, "-m", "tradebaas.supervisor", "--port", str(web_port)]
        )
        log = supervisor.log_path  # type: ignore[attr-defined]
        while len(children(log)) < 5:
            time.sleep(0.5)
        time.sleep(10)
        run = services.run_start(strategy="fast_test", params={}, instrument="BTC-PERPETUAL")
        started = time.monotonic()
        pids = children(log)
        samples: dict[str, list[float]] = {name: [] for name in pids}
        state = sim_state(sim_port)
        last_print = 0.0
        while True:
            state = sim_state(sim_port)
            for name, pid in pids.items():
                samples[name].append(tree_rss_mb(pid))
            elapsed = time.monotonic() - started
            if elapsed - last_print > 60:
                last_print = elapsed
                print(
                    f"  {elapsed / 60:5.1f} min: candles {state['replayed_candles']}/"
                    f"{state['total_candles']}, RSS "
                    + ", ".join(f"{n} {s[-1]:.0f} MB" for n, s in samples.items()),
                    flush=True,
                )
            if args.loop and args.hours and elapsed > args.hours * 3600:
                break
            if not args.loop and state["replayed_candles"] >= state["total_candles"]:
                break
            if supervisor.poll() is not None:
                failures.append("the supervisor exited")
                break
            time.sleep(args.sample_every)
        duration = time.monotonic() - started

        # Let the loop record the last exit (it polls the position every couple of seconds).
        from apps.orders.models import LIVE_BRACKET_STATES, Bracket

        settle = time.monotonic() + 30
        while (
            time.monotonic() < settle
            and Bracket.objects.filter(state__in=LIVE_BRACKET_STATES).exists()
        ):
            time.sleep(1)
        services.run_stop(reason="soak finished")
        time.sleep(5)
        state = sim_state(sim_port)
        checks = check_history(state)
        log_text = log.read_text(errors="replace")
        restarts = re.findall(r"(\w+) exited with (-?\d+); restarting", log_text)
        run.refresh_from_db()

    print(
        f"Soak: {state['replayed_candles']} candles at {args.speed:g}x in {duration / 60:.1f} min"
    )
    print(f"  trades in history {checks['trades']}, brackets closed {checks['closed']}, "
          f"live {checks['live']}, failed/rolled back {checks['failed']}, "
          f"armed ahead left {checks['armed']}")  # fmt: skip
    print(f"  exchange: {checks['fills']} fills, {checks['open_orders']} open orders, "
          f"{checks['positions']} positions")  # fmt: skip
    failures += checks["problems"]
    for name, values in samples.items():
        n = len(values)
        if n < 10:
            continue
        early = values[n // 5 : 2 * n // 5]
        late = values[4 * n // 5 :]
        growth = sum(late) / len(late) - sum(early) / len(early)
        print(f"  {name:<10} RSS {min(values):.0f}-{max(values):.0f} MB, growth {growth:+.1f} MB")
        if growth > args.max_growth_mb:
            failures.append(f"{name}: memory grew by {growth:.1f} MB")
    print(f"  restarts: {len(restarts)}  {restarts if restarts else ''}")
    if restarts:
        failures.append(f"processes restarted: {restarts}")
    print(
        f"  run {run.id} ended in {run.state}{': ' + run.error_message if run.error_message else ''}"
    )
    if run.error_message:
        failures.append(f"run error: {run.error_message}")
    print("RESULT: " + ("OK" if not failures else "FAILED: " + "; ".join(failures)))
    return 1 if failures else 0


def check_history(state: dict) -> dict:
    """Compare the exchange (the simulator's state) with our brackets, orders and trades."""
    from apps.orders.models import LIVE_BRACKET_STATES, Bracket, Order, Trade

    labels = dict(Order.objects.values_list("label", "bracket__bracket_id"))
    brackets = {b.bracket_id: b for b in Bracket.objects.all()}
    problems: list[str] = []
    closed = [b for b in brackets.values() if b.state == "CLOSED"]
    with_trade = set(Trade.objects.values_list("bracket__bracket_id", flat=True))
    missing = [b.bracket_id for b in closed if b.bracket_id not in with_trade]
    if missing:
        problems.append(f"{len(missing)} closed bracket(s) without a trade: {missing[:5]}")
    foreign_fills = [
        t for t in state.get("trades", []) if t.get("label") and t["label"] not in labels
    ]
    if foreign_fills:
        problems.append(f"{len(foreign_fills)} fill(s) with labels we never placed")
    orphans = []
    for order in state.get("open_orders", []):
        bracket = brackets.get(labels.get(order.get("label", ""), ""))
        if bracket is None or bracket.state not in LIVE_BRACKET_STATES:
            orphans.append(order.get("label") or order.get("order_id"))
    if orphans:
        problems.append(f"{len(orphans)} orphan order(s) on the exchange: {orphans[:5]}")
    armed = [b.bracket_id for b in brackets.values() if b.state == "ARMED"]
    if armed:  # the loop deletes the intent it armed ahead when it stops (apps/orders/armed.py)
        problems.append(f"{len(armed)} intent(s) armed ahead left after the run stopped")
    return {
        "trades": len(with_trade),
        "closed": len(closed),
        "live": sum(1 for b in brackets.values() if b.state in LIVE_BRACKET_STATES),
        "armed": len(armed),
        "failed": sum(
            1 for b in brackets.values() if b.state in ("FAILED", "ROLLED_BACK", "BROKEN")
        ),
        "fills": len(state.get("trades", [])),
        "open_orders": len(state.get("open_orders", [])),
        "positions": len([p for p in state.get("positions", []) if float(p.get("size", 0) or 0)]),
        "problems": problems,
    }


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
