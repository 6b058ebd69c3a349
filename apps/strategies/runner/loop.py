"""The loop (placeholder until the loop lands)."""

from __future__ import annotations


def run_loop_forever(run_id: int) -> str:
    return "not-implemented"
