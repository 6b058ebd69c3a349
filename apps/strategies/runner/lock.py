"""The runner lock: one loop trades, proven by a Redis key whose value is ``{run_id}:{fence}``.

The fencing number comes from ``INCR`` so every acquisition gets a larger one; the run row keeps
the fence of the loop that owns it and transitions filter on it. Renewal and release compare the
value in Lua (compare-and-extend, compare-and-delete), so a loop that lost the key can never
extend or delete the key of its successor. ``check`` is called right before every order.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

from apps.monitoring import metrics
from apps.strategies.control import control_key
from apps.strategies.runner.config import runner_setting
from tradebaas.redis import redis_client, rkey

LOCK_NAME = "lock:runner"
FENCE_NAME = "runner:fence"

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


@functools.cache
def _fire_script() -> Any:
    """The fire script, sent by its SHA (redis-py loads it again if the server lost it)."""
    from apps.orders.armed import FIRE_SCRIPT

    return redis_client().register_script(FIRE_SCRIPT)


class LockLost(Exception):
    """This loop no longer holds the runner lock: it must stop trading at once."""


class ControlChanged(Exception):
    """A run or the risk settings changed since the decision's reads (apps/strategies/control.py):
    nothing was fired; read them again and decide again."""


def lock_ttl_ms() -> int:
    return int(runner_setting("RUNNER_LOCK_TTL_MS"))


def lock_holder() -> str | None:
    value = redis_client().get(rkey(LOCK_NAME))
    return value.decode() if value else None


@dataclass
class RunnerLock:
    run_id: int
    ttl_ms: int = field(default_factory=lock_ttl_ms)
    fence: int = 0
    _renewed_at: float = 0.0

    @property
    def token(self) -> str:
        return f"{self.run_id}:{self.fence}"

    def acquire(self) -> bool:
        """Take the lock with a fresh fencing number; False when another loop holds it."""
        client = redis_client()
        if client.exists(rkey(LOCK_NAME)):
            return False
        self.fence = int(client.incr(rkey(FENCE_NAME)))
        if not client.set(rkey(LOCK_NAME), self.token, nx=True, px=self.ttl_ms):
            return False
        self._renewed_at = time.monotonic()
        metrics.LOCK_HELD.set(1)
        return True

    def renew(self) -> None:
        """Extend the lock if still ours, else LockLost."""
        ok = redis_client().eval(_RENEW, 1, rkey(LOCK_NAME), self.token, self.ttl_ms)
        if not ok:
            metrics.LOCK_HELD.set(0)
            raise LockLost(f"runner lock lost by run {self.run_id} fence {self.fence}")
        self._renewed_at = time.monotonic()

    def renew_due(self) -> bool:
        # at most every half second: a stolen or expired lock is noticed within that
        return time.monotonic() - self._renewed_at >= min(self.ttl_ms / 3000.0, 0.5)

    def check(self) -> None:
        """Right before an order: the lock must still carry our token (LockLost otherwise).

        Also refuses when the last renewal is older than the TTL: the key may have expired and
        been taken by a successor an instant after we read it.
        """
        if time.monotonic() - self._renewed_at > self.ttl_ms / 1000.0 * 0.8:
            self.renew()
        value = redis_client().get(rkey(LOCK_NAME))
        if value is None or value.decode() != self.token:
            metrics.LOCK_HELD.set(0)
            raise LockLost(f"runner lock lost by run {self.run_id} fence {self.fence}")

    def fire(self, mark_key: str, at_ms: int, *, control: int | None = None) -> bool:
        """``check`` for an armed intent (apps/orders/armed.py), in the same round trip: the lock
        must carry our token (LockLost otherwise) and the intent's mark turns from ``armed`` to
        ``fired:<at_ms>`` atomically with that check (the request is then made valid from
        ``at_ms``). False: the intent is not armed (send nothing with it).

        ``control``: the control version the decision's reads were made under
        (apps/strategies/control.py); if it has moved since, nothing is fired and
        ``ControlChanged`` is raised."""
        if time.monotonic() - self._renewed_at > self.ttl_ms / 1000.0 * 0.8:
            self.renew()
        client = redis_client()
        result = int(
            _fire_script()(
                keys=[rkey(LOCK_NAME), mark_key, control_key()],
                args=[self.token, at_ms, "" if control is None else control],
                client=client,
            )
        )
        if result == 0:
            metrics.LOCK_HELD.set(0)
            raise LockLost(f"runner lock lost by run {self.run_id} fence {self.fence}")
        if result == -2:
            raise ControlChanged(f"run {self.run_id}: the run or the risk settings changed")
        return result == 1

    def release(self) -> None:
        try:
            redis_client().eval(_RELEASE, 1, rkey(LOCK_NAME), self.token)
        finally:
            metrics.LOCK_HELD.set(0)
