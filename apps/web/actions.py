"""The page's emergency actions: the kill switch and close-position.

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

from celery import shared_task

from apps.brokers.base import Order, Position
from apps.monitoring.events import event_record
from apps.strategies.services import RunConflict, run_stop
from tradebaas.redis import redis_client, rkey

log = logging.getLogger(__name__)
COMMANDS_KEY = "runner:commands"
RESULT_TTL = 120
WAIT_SECONDS = 20


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
    if _loop_alive():
        client.rpush(rkey(COMMANDS_KEY), json.dumps(command))
        answer = client.blpop([rkey(f"runner:result:{command['id']}")], timeout=WAIT_SECONDS)
        if answer is None:
            raise ActionFailed("The strategy loop did not answer in time; check the events list.")
        result = json.loads(answer[1])
    else:
        try:
            result = execute_on_runner.apply_async(args=[command], queue="runner").get(
                timeout=WAIT_SECONDS
            )
        except Exception as exc:
            raise ActionFailed(f"The runner worker did not answer: {type(exc).__name__}") from exc
    if not result.get("ok"):
        raise ActionFailed(result.get("message", "failed"))
    return result["message"]


def drain_commands(call: Callable[..., Any]) -> int:
    """Run every queued command with ``call(method, *args)`` (the loop's broker); returns how many."""
    client = redis_client()
    done = 0
    while raw := client.lpop(rkey(COMMANDS_KEY)):
        command = json.loads(raw)
        result = perform(call, command)
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
        positions = {p.instrument: p for p in call("positions") if p.size != 0}
        orders: list[Order] = [o for o in call("open_orders") if o.is_live]
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


@shared_task(name="apps.web.actions.execute_on_runner")
def execute_on_runner(command: dict[str, Any]) -> dict[str, Any]:
    """No loop runs: connect to the active broker here, do the command, disconnect."""
    from apps.brokers.selectors import active_account
    from apps.brokers.services import broker_build
    from apps.orders.gateway import BrokerGateway

    gateway = BrokerGateway(broker_build(account=active_account()), timeout=15)
    try:
        gateway.call("connect")
        return perform(gateway.call, command)
    finally:
        try:
            gateway.call("disconnect")
        finally:
            gateway.close()


def kill_switch_execute(*, user, close_position: bool) -> str:
    stopped = "No strategy was running."
    try:
        run = run_stop(user=user, reason="kill switch")
        stopped = f"Run {run.pk} stopped."
    except RunConflict:
        pass
    report = dispatch({"action": "kill", "close_position": close_position})
    return f"{stopped} {report}"


def position_close_execute(*, user) -> str:
    return dispatch({"action": "close_position"})
