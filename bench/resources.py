"""Worker resources: RSS and CPU of the runner worker and the default worker (main process and
pool children), idle and while the loop trades a 60x paper replay (FastTest on BTC-PERPETUAL,
one candle per second). Targets: worker RSS <= 150 MB, idle CPU <= 1 % of a core.

    .venv/bin/python bench/resources.py [--seconds 60] [--speed 60]
"""

from __future__ import annotations

import argparse
import os
import time

from _stack import Stack, cpu_seconds, process_tree, pss_bytes, rss_bytes


def sample(procs: dict[str, int], seconds: float) -> dict[str, dict[str, float]]:
    """CPU % of one core over ``seconds`` and peak RSS (MB) per worker: main process and children."""
    trees = {name: process_tree(pid) for name, pid in procs.items()}
    cpu0 = {name: sum(cpu_seconds(p) for p in tree) for name, tree in trees.items()}
    peak: dict[str, dict[str, float]] = {name: {} for name in procs}
    pss: dict[str, float] = {name: 0.0 for name in procs}
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        for name, pid in procs.items():
            for p in process_tree(pid):
                key = "main" if p == pid else f"child {p}"
                peak[name][key] = max(peak[name].get(key, 0), rss_bytes(p) / 2**20)
            total = sum(pss_bytes(p) for p in process_tree(pid)) / 2**20
            pss[name] = max(pss[name], total)
        time.sleep(1)
    elapsed = time.monotonic() - started
    out = {}
    for name, pid in procs.items():
        cpu1 = sum(cpu_seconds(p) for p in process_tree(pid))
        out[name] = {"cpu": (cpu1 - cpu0[name]) / elapsed * 100, "pss": pss[name], **peak[name]}
    return out


def show(title: str, figures: dict[str, dict[str, float]]) -> None:
    print(title)
    for name, values in figures.items():
        rss = ", ".join(f"{k} {v:.0f} MB" for k, v in values.items() if k not in ("cpu", "pss"))
        print(
            f"  {name:<14} CPU {values['cpu']:5.2f} % of a core   RSS peak: {rss}"
            f"   (PSS of all its processes {values['pss']:.0f} MB)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--speed", type=float, default=60)
    args = parser.parse_args()
    env = {"TRADEBAAS_PAPER_SPEED": str(args.speed)}
    with Stack("resources", extra_env=env) as stack:
        runner = stack.start_worker("runner", 1)
        worker = stack.start_worker("default", 2)
        beat = stack.start_beat()
        time.sleep(15)  # start-up, imports, first heartbeats
        procs = {"runner worker": runner.pid, "default worker": worker.pid, "beat": beat.pid}
        idle = sample(procs, args.seconds)

        from apps.orders.models import Trade
        from apps.strategies import services
        from apps.strategies.models import StrategyRun

        run = services.run_start(strategy="fast_test", params={}, instrument="BTC-PERPETUAL")
        time.sleep(10)  # the loop starts, warms its window
        before = Trade.objects.count()
        busy = sample(procs, args.seconds)
        run = StrategyRun.objects.get(id=run.id)
        trades = Trade.objects.count() - before
        for proc in (runner, worker, beat):
            assert proc.poll() is None, f"a worker died: {proc.log_path.read_text()[-2000:]}"  # type: ignore[attr-defined]
    show(f"Idle ({args.seconds:.0f} s, no run):", idle)
    show(f"Trading a {args.speed:.0f}x paper replay ({args.seconds:.0f} s, FastTest):", busy)
    print(f"  loop: run state {run.state}, {trades} trades recorded in the window")
    print(f"  machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
