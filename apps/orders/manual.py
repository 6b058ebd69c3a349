"""Manual actions on the exchange: the kill switch and close-position (from the page).

They act on the exchange, so they run where the broker connection lives: inside the strategy
loop when one is running (a command list in Redis that the loop drains every pass), otherwise
as a task on the ``runner`` queue, the same process that hosts the loop and the paper engine.
The page waits for the answer and shows what was done.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from apps.brokers.base import Order, Position
from apps.monitoring.events import event_record
from apps.strategies.services import RunConflict, run_stop
from tradebaas.redis import redis_client, rkey

log = logging.getLogger(__name__)
COMMANDS_KEY = "runner:commands"
RESULT_TTL = 120
WAIT_SECONDS = 20
LOOP_WAIT_SECONDS = 5  # a loop drains its commands every pass (about a second)


class ActionFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _loop_alive() -> bool:
    from apps.strategies.runner.lock import lock_holder

    return lock_holder() is not None


def dispatch(command: dict[str, Any]) -> str:
    """Hand a command to whoever holds the broker connection and wait for its report."""
    command = {**command, "id": uuid.uuid4().hex}
    client = redis_client()
    result = None
    if _loop_alive():
        raw = json.dumps(command)
        client.rpush(rkey(COMMANDS_KEY), raw)
        answer = client.blpop([rkey(f"runner:result:{command['id']}")], timeout=LOOP_WAIT_SECONDS)
        if answer is not None:
            result = json.loads(answer[1])
        elif not client.lrem(rkey(COMMANDS_KEY), 1, raw):
            # the loop took it and is still working on it: do not do it a second time
            raise ActionFailed("The strategy loop is still carrying it out; check the events list.")
    if result is None:  # no loop (or it ended before taking the command): the runner worker
        try:
            from apps.orders.tasks import manual_command

            result = manual_command.apply_async(args=[command], queue="runner").get(
                timeout=WAIT_SECONDS
            )
        except Exception as exc:
            raise ActionFailed(f"The runner worker did not answer: {type(exc).__name__}") from exc
    if not result.get("ok"):
        raise ActionFailed(result.get("message", "failed"))
    return result["message"]


def manual_commands_waiting() -> bool:
    try:
        return bool(redis_client().llen(rkey(COMMANDS_KEY)))
    except Exception:
        return False


def drain_commands(call: Callable[..., Any], *, settle: Callable[[], None] | None = None) -> int:
    """Run every queued command with ``call(method, *args)`` (the loop's broker); returns how many.

    A command that also stops the run (the kill switch) calls ``settle`` between the exchange
    work and the stop, so the loop records the trade it just closed while the run is active.
    """
    client = redis_client()
    done = 0
    while raw := client.lpop(rkey(COMMANDS_KEY)):
        command = json.loads(raw)
        result = perform(call, command)
        if command.get("stop_run"):
            if result.get("ok") and settle is not None:
                try:
                    settle()
                except Exception:  # the stop below matters more than the bookkeeping
                    log.exception("kill switch: settling the closed position failed")
            result["message"] = _stop_active_run(command.get("by", "")) + result["message"]
        client.rpush(rkey(f"runner:result:{command['id']}"), json.dumps(result))
        client.expire(rkey(f"runner:result:{command['id']}"), RESULT_TTL)
        done += 1
    return done


def _protects(order: Order, positions: dict[str, Position]) -> bool:
    position = positions.get(order.instrument)
    return bool(order.reduce_only and position is not None and position.size != 0)


def perform(call: Callable[..., Any], command: dict[str, Any]) -> dict[str, Any]:
    """Do ``command`` on the broker; a report for the trader, never an exception."""
    action = command.get("action")
    try:
        scope = command.get("instrument")  # close-position: that instrument only
        positions = {
            p.instrument: p
            for p in call("positions")
            if p.size != 0 and scope in (None, p.instrument)
        }
        orders: list[Order] = [
            o for o in call("open_orders") if o.is_live and scope in (None, o.instrument)
        ]
        cancelled, closed = [], []
        if action == "close_position" or command.get("close_position"):
            for instrument in list(positions):
                call("close_position", instrument)
                closed.append(instrument)
            positions = {}
        for order in orders:
            if not _protects(order, positions):
                call("cancel", order.order_id)
                cancelled.append(order.label or order.order_id)
        if action == "close_position" and not closed:
            return {"ok": False, "message": "There is no open position to close."}
        message = (
            f"Closed {', '.join(closed) or 'no position'}; cancelled {len(cancelled)} order(s)"
            + (f": {', '.join(cancelled)}" if cancelled else "")
            + (
                f". Kept {sum(1 for o in orders if _protects(o, positions))} order(s) protecting open positions."
                if positions
                else "."
            )
        )
        event_record(
            kind=f"manual.{action}",
            message=message,
            level="warning",
            context={"cancelled": cancelled, "closed": closed},
            alert=True,
        )
        return {"ok": True, "message": message}
    except Exception as exc:
        log.exception("manual %s failed", action)
        event_record(
            kind=f"manual.{action}", message=f"{action} failed: {exc}", level="error", alert=True
        )
        return {"ok": False, "message": f"{action} failed: {exc}"}


def _stop_active_run(username: str) -> str:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username=username).first() if username else None
    try:
        run = run_stop(user=user, reason="kill switch")
    except RunConflict:
        return "No strategy was running. "
    return f"Run {run.pk} stopped. "


def execute_here(command: dict[str, Any]) -> dict[str, Any]:
    """No loop runs: connect to the active broker here, do the command, disconnect.

    Runs as ``apps.orders.tasks.manual_command`` on the runner queue."""
    from apps.brokers.selectors import active_account
    from apps.brokers.services import broker_build
    from apps.orders.gateway import BrokerGateway

    stopped = _stop_active_run(command.get("by", "")) if command.get("stop_run") else ""
    gateway = BrokerGateway(broker_build(account=active_account()), timeout=15)
    try:
        gateway.call("connect")
        result = perform(gateway.call, command)
        result["message"] = stopped + result["message"]
        return result
    finally:
        try:
            gateway.call("disconnect")
        finally:
            gateway.close()


def kill_switch_execute(*, user, close_position: bool) -> str:
    """Stop the run and clean the account. With a loop running, the loop does both in one
    pass (exchange first, then the run), so no new candle can slip a bracket in between; the
    paper exchange also lives only in that loop."""

    actor = user.get_username() if getattr(user, "pk", None) else ""
    command = {"action": "kill", "close_position": close_position, "stop_run": True, "by": actor}
    if _loop_alive():
        try:
            return dispatch(command)
        except ActionFailed:
            log.warning("kill switch: the loop did not carry it out; stopping the run from here")
    stopped = "No strategy was running."
    try:
        run = run_stop(user=user, reason="kill switch")
        stopped = f"Run {run.pk} stopped."
    except RunConflict:
        pass
    return f"{stopped} {dispatch({**command, 'stop_run': False})}"


def position_close_execute(*, user) -> str:
    """Close the position the page shows (its bracket's instrument), and cancel its legs."""
    from apps.orders.models import LIVE_BRACKET_STATES, Bracket

    bracket = Bracket.objects.filter(state__in=LIVE_BRACKET_STATES).order_by("-id").first()
    if bracket is None:
        raise ActionFailed("There is no open position to close.")
    return dispatch({"action": "close_position", "instrument": bracket.instrument})
