"""The runner lock: one loop trades, proven by a Redis key whose value is ``{run_id}:{fence}``.

The fencing number comes from ``INCR`` so every acquisition gets a larger one; the run row keeps
the fence of the loop that owns it and transitions filter on it. Renewal and release compare the
value in Lua (compare-and-extend, compare-and-delete), so a loop that lost the key can never
extend or delete the key of its successor. ``check`` is called right before every order.

``fire`` is that check for an armed intent (apps/orders/armed.py); ``fire_ahead`` sends it as
the candle arrives and reads its answer when the request is about to go (``FireAhead``).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoScriptError

from apps.monitoring import metrics
from apps.strategies.control import control_key
from apps.strategies.runner.config import runner_setting
from tradebaas.redis import redis_client, rkey

log = logging.getLogger(__name__)
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


# KEYS[1] the runner lock, KEYS[2] the intent's mark; ARGV[1] the lock's token, ARGV[2] the ms
# a fire sent ahead marked. That fire's request never went (no signal, a refusal, an error
# first): the intent is armed again, if the mark is still that fire's and the lock still ours.
# Otherwise the mark stays fired and the intent is settled as any fired one (its labels looked
# up once its request could no longer arrive: nothing is found, its rows go).
_UNFIRE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('get', KEYS[2]) ~= 'fired:' .. ARGV[2] then return 0 end
redis.call('set', KEYS[2], 'armed')
return 1
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
        result = _fire_script()(
            keys=[rkey(LOCK_NAME), mark_key, control_key()],
            args=[self.token, at_ms, "" if control is None else control],
            client=client,
        )
        return self._fired(int(result))

    def _fired(self, result: int) -> bool:
        """The fire script's answer: LockLost, ControlChanged or whether the intent fired."""
        if result == 0:
            metrics.LOCK_HELD.set(0)
            raise LockLost(f"runner lock lost by run {self.run_id} fence {self.fence}")
        if result == -2:
            raise ControlChanged(f"run {self.run_id}: the run or the risk settings changed")
        return result == 1

    def fire_ahead(self, mark_key: str, at_ms: int, *, control: int) -> FireAhead:
        """``fire``, sent now and answered when ``FireAhead.take`` is called."""
        if time.monotonic() - self._renewed_at > self.ttl_ms / 1000.0 * 0.8:
            self.renew()
        return FireAhead(self, mark_key, at_ms, control)

    def release(self) -> None:
        try:
            redis_client().eval(_RELEASE, 1, rkey(LOCK_NAME), self.token)
        finally:
            metrics.LOCK_HELD.set(0)


class FireAhead:
    """The fire of an armed intent sent as the candle arrives, its answer read when the request
    is about to go: the lock check's round trip (about 0.3 ms) runs while the strategy analyses
    the candle and the trade is sized, instead of after.

    The check is as strict as ``fire``'s: the lock must carry our token and the control version
    must be the one the decision's context was read under, or nothing is sent. It is made up
    to a millisecond earlier, which a lease of seconds, renewed from the loop, does not notice;
    a Stop or a settings change that lands in that millisecond is like one that lands during
    the request (the loop finds it at its next check).

    Unused (no signal, a refusal, an error before the request), ``settle`` arms the intent again.
    The answer comes on a connection of its own, out of the pool until it is read.
    """

    def __init__(self, lock: RunnerLock, key: str, at_ms: int, control: int) -> None:
        self.lock, self.key, self.at_ms, self.control = lock, key, at_ms, control
        self.settled = False  # taken, or settled unused
        self._answer: int | None = None
        pool = redis_client().connection_pool
        connection = pool.get_connection()
        try:
            connection.send_command(
                "EVALSHA",
                _fire_script().sha,
                3,
                rkey(LOCK_NAME),
                key,
                control_key(),
                lock.token,
                at_ms,
                control,
            )
        except BaseException:
            connection.disconnect()
            pool.release(connection)
            raise
        self._pool, self._connection = pool, connection

    def serves(self, key: str, control: int | None) -> bool:
        """Unread, and made for this intent under this control version."""
        return not self.settled and key == self.key and control == self.control

    def take(self) -> bool:
        """The fire's answer, as ``RunnerLock.fire`` gives it (LockLost, ControlChanged, or
        whether the intent fired, at ``at_ms``)."""
        self.settled = True
        answer = self._read()
        if answer is None:  # the server had lost the script: nothing ran; fire the usual way
            return self.lock.fire(self.key, self.at_ms, control=self.control)
        return self.lock._fired(answer)

    def settle(self) -> None:
        """Not used for a request: read its answer and, if it fired, arm the intent again.
        Never raises (it runs in the loop's ``finally``): a lost lock is found by the next
        renewal; a Redis failure leaves the mark fired, which the reconcile settles."""
        if self.settled:
            return
        self.settled = True
        try:
            if self._read() == 1:
                redis_client().eval(
                    _UNFIRE, 2, rkey(LOCK_NAME), self.key, self.lock.token, self.at_ms
                )
        except Exception:
            log.warning(
                "fire ahead of %s: not settled; the reconcile settles it", self.key, exc_info=True
            )

    def _read(self) -> int | None:
        """The script's answer (None: the server did not know the script, so nothing ran)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return self._answer
        try:
            self._answer = int(connection.read_response())
        except NoScriptError:
            self._answer = None
        except BaseException:
            connection.disconnect()  # its answer may still come: never reused
            raise
        finally:
            self._pool.release(connection)
        return self._answer
