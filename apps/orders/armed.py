"""Armed intents: a bracket's intent rows written before its candle closes.

The intent of a bracket (its row and the labels of its three legs) must be in the database
before the request goes out, so that a crash between the request and its answer leaves labels
to look up. For a broker that places the whole set in ONE request (Deribit's OTOCO, paper),
the runner writes that intent ahead: while it waits for the next candle it keeps one bracket
row ARMED (a fresh bracket id, the three labelled order rows; no side, amount or prices yet).
At the close it fills in the plan in memory and sends at once; the plan's values, the outcome
and the run's moves are written when the answer is in (``brackets._place_armed``).

Whether an armed intent was sent is kept in Redis, next to the runner lock: its mark says
``armed`` until the runner FIRES it, in the same atomic script that checks the lock right
before the request (``RunnerLock.fire``: one round trip, as the lock check alone was). So
after a crash the reconcile knows:

- mark ``armed`` (or ``void``): never sent. The reconcile voids it first, and a loop that lost
  the lock can fire nothing, so the rows are deleted at once, without waiting;
- mark ``fired:<ms>``: sent at that time. Its labels are looked up once the request could no
  longer arrive (its ``valid_until``), as for any bracket whose answer was lost;
- no mark (Redis lost its data): treated as sent just now, waited out, looked up.

An intent is used once: firing turns its mark from ``armed`` to ``fired``, so a second fire
fails. A loop that stops cleanly disarms its unused intent (rows and mark deleted).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction

from apps.brokers.base import bracket_labels
from apps.orders.models import Bracket, BracketState, Order, OrderRole, OrderStatus
from tradebaas.fastsql import insert_rows
from tradebaas.redis import redis_client, rkey

log = logging.getLogger("tradebaas.brackets")

MARK = "bracket:armed:"
ARMED, VOID, FIRED = "armed", "void", "fired:"

# KEYS[1] the runner lock, KEYS[2] the intent's mark, KEYS[3] the control version
# (apps/strategies/control.py); ARGV[1] the lock's token, ARGV[2] now (ms), ARGV[3] the control
# version the decision was made on ('' : not checked). 1: the lock is ours and the intent was
# armed (now fired); 0: the lock is not ours (nothing changed); -2: the control version moved
# (nothing changed); -1: the intent is not armed (fired already, voided, or its mark was lost).
FIRE_SCRIPT = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] ~= '' and (redis.call('get', KEYS[3]) or '0') ~= ARGV[3] then return -2 end
if redis.call('get', KEYS[2]) ~= 'armed' then return -1 end
redis.call('set', KEYS[2], 'fired:' .. ARGV[2])
return 1
"""
# An intent not fired becomes void (never to be fired); returns the mark as it was ('' if none).
_CLAIM = """
local mark = redis.call('get', KEYS[1])
if mark == 'armed' or mark == 'void' then
  redis.call('set', KEYS[1], 'void')
end
return mark or ''
"""


def mark_key(bracket_id: str) -> str:
    return rkey(f"{MARK}{bracket_id}")


@dataclass(slots=True)
class ArmedIntent:
    """The rows of an armed bracket (saved, state ARMED) and its mark's Redis key."""

    bracket: Bracket
    rows: dict[str, Order]

    @property
    def bracket_id(self) -> str:
        return self.bracket.bracket_id

    @property
    def key(self) -> str:
        return mark_key(self.bracket.bracket_id)


_LEGS = (
    (OrderRole.ENTRY, "market", False),
    (OrderRole.STOP_LOSS, "stop_market", True),
    (OrderRole.TAKE_PROFIT, "take_limit", True),
)


def bracket_arm(
    *, broker: str, instrument: str, run_id: int | None, account_id: int | None
) -> ArmedIntent:
    """Write an armed intent (one transaction) and set its mark."""
    from apps.orders.brackets import new_bracket_id

    bracket = Bracket(
        bracket_id=new_bracket_id(),
        run_id=run_id,
        broker_account_id=account_id,
        broker=broker,
        instrument=instrument,
        side="",
        amount=0,
        stop_price=0,
        take_profit_price=0,
        linked=True,
        state=BracketState.ARMED,
    )
    labels = bracket_labels(bracket.bracket_id)
    rows = {
        role: Order(
            bracket=bracket,
            role=role,
            label=label,
            order_type=order_type,
            side="",
            amount=0,
            reduce_only=reduce_only,
            status=OrderStatus.INTENT,
        )
        for (role, order_type, reduce_only), label in zip(_LEGS, labels, strict=True)
    }
    with transaction.atomic():
        insert_rows([bracket])
        for row in rows.values():
            row.bracket_id = bracket.pk
        insert_rows(list(rows.values()))
    try:
        redis_client().set(mark_key(bracket.bracket_id), ARMED)
    except BaseException:
        _delete_rows(bracket.pk)
        raise
    return ArmedIntent(bracket=bracket, rows=rows)


def bracket_disarm(intent: ArmedIntent) -> bool:
    """Delete an intent that was never fired (its rows and its mark). False, leaving both for
    the reconcile, when it was fired or its mark cannot be read."""
    try:
        mark = armed_claim(intent.bracket_id)
    except Exception:
        log.warning(
            "armed intent %s: mark not readable; the reconcile settles it",
            intent.bracket_id,
            exc_info=True,
        )
        return False
    if mark.startswith(FIRED):
        return False
    armed_forget(intent.bracket_id, intent.bracket.pk)
    return True


def armed_claim(bracket_id: str) -> str:
    """Void the intent unless it was fired; returns its mark as it was ('' when there was
    none). Called by the holder of the runner lock, so nothing can fire it afterwards."""
    mark = redis_client().eval(_CLAIM, 1, mark_key(bracket_id))
    return mark.decode() if isinstance(mark, bytes) else str(mark or "")


def armed_forget(bracket_id: str, pk: int) -> None:
    """An intent known never to have been sent: its rows and mark go."""
    _delete_rows(pk)
    redis_client().delete(mark_key(bracket_id))


def _delete_rows(pk: int) -> None:
    Bracket.objects.filter(pk=pk, state=BracketState.ARMED).delete()
