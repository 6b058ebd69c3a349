"""Exponential back-off with jitter for reconnects."""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff_delays(
    base: float = 0.5,
    cap: float = 30.0,
    factor: float = 2.0,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Endless delays: attempt n waits between half and all of ``min(cap, base * factor**(n-1))``.

    "Equal jitter": the ceiling grows exponentially, and the random half spreads clients that
    lost the same server at the same moment so they do not all come back at once.
    """
    if base <= 0 or cap <= 0 or factor < 1:
        raise ValueError("base and cap must be positive, factor at least 1")
    rng = rng or random.Random()
    ceiling = base
    while True:
        step = min(cap, ceiling)
        yield step / 2 + rng.uniform(0, step / 2)
        ceiling *= factor
