"""Writes on strategy runs. ``run_transition`` is THE one way a run changes state.

Every transition is a conditional UPDATE (``filter(id, state__in=expected).update(...)``), so two
processes can never both move a run out of the same state; the winner writes the RunTransition
row, the audit event (live push) and, for ERROR / PAUSED, the alert.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.monitoring import metrics
from apps.monitoring.events import event_record
from apps.strategies.control import control_changed
from apps.strategies.models import LOOP_STATES, RunState, RunTransition, StrategyRun
from tradebaas.fastsql import GuardedUpdate

log = logging.getLogger("tradebaas.runs")


class RunConflict(Exception):
    """The request does not fit the run's state (HTTP 409)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RunInputError(ValueError):
    """Bad input naming its field (HTTP 400)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# Where a transition may come from (None = anywhere but itself).
_ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    RunState.ANALYZING: (
        RunState.IDLE,
        RunState.SIGNAL_DETECTED,
        RunState.ENTERING_POSITION,
        RunState.POSITION_OPEN,
        RunState.CLOSING,
    ),
    RunState.SIGNAL_DETECTED: (RunState.ANALYZING,),
    RunState.ENTERING_POSITION: (RunState.SIGNAL_DETECTED,),
    RunState.POSITION_OPEN: (RunState.IDLE, RunState.ENTERING_POSITION, RunState.CLOSING),
    RunState.CLOSING: (RunState.POSITION_OPEN,),
    RunState.PAUSED: tuple(LOOP_STATES),
    RunState.ERROR: (*LOOP_STATES, RunState.PAUSED),
    RunState.IDLE: (RunState.PAUSED, RunState.ERROR),
}

_ALERT_KIND = {RunState.ERROR: "run_error", RunState.PAUSED: "run_paused"}


def run_transition(
    *,
    run_id: int,
    to: str,
    reason: str,
    message: str = "",
    context: dict[str, Any] | None = None,
    expected: Iterable[str] | None = None,
    fence: int | None = None,
    actor: str = "loop",
    extra: dict[str, Any] | None = None,
    pending: list[dict[str, Any]] | None = None,
) -> bool:
    """Move run ``run_id`` to ``to`` if it is in one of ``expected`` (default: the states that
    may lead to ``to``) and, when ``fence`` is given, still owned by that loop.

    Returns True if this call moved it. Writes the transition row and the event; ERROR and
    PAUSED alert. ``extra`` are more columns to set in the same UPDATE. ``pending``: collect
    the events instead of sending them (``run_announce`` sends them later).
    """
    to = RunState(to)
    allowed = tuple(expected) if expected is not None else _ALLOWED_FROM[to]
    now = timezone.now()
    values: dict[str, Any] = {"state": to, **(extra or {})}
    if to is RunState.ERROR:
        values.update(
            error_message=message or reason, error_context=_jsonable(context or {}), error_at=now
        )
    if to is RunState.PAUSED:
        values["pause_reason"] = reason
    with transaction.atomic():
        if len(allowed) == 1:  # the loop knows its state: one conditional UPDATE decides
            from_state = allowed[0]
        else:
            run = StrategyRun.objects.select_for_update().filter(id=run_id).first()
            if run is None or not run.is_active or run.state not in allowed:
                return False
            from_state = run.state
        queryset = StrategyRun.objects.filter(id=run_id, state=from_state, is_active=True)
        if fence is not None:
            queryset = queryset.filter(fence=fence)
        if queryset.update(**values) != 1:
            return False
        if fence is None:  # not one of the loop's own moves: the loop must read it (control.py)
            control_changed()
        RunTransition.objects.create(
            run_id=run_id,
            from_state=from_state,
            to_state=to,
            reason=reason,
            message=message,
            context=_jsonable(context or {}),
            actor=actor,
        )
        announcement = {
            "run_id": run_id,
            "from": from_state,
            "to": str(to),
            "reason": reason,
            "message": message,
            "context": context or {},
        }
        if pending is None:
            _announce(announcement)
        else:  # the hot path announces after the exchange answered (see run_announce)
            pending.append(announcement)
    _state_gauge(to)
    return True


@dataclass(frozen=True, slots=True)
class Step:
    """One move of a ``run_path``."""

    to: RunState
    reason: str
    message: str = ""
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunPath:
    """The writes of several moves the loop makes at once, for the caller to make in its own
    statement: ``guard`` (the run still active, owned by ``fence``, in the state it left) and
    the transition ``rows``; ``announcements`` for ``run_announce`` once they are written."""

    guard: GuardedUpdate
    rows: list[RunTransition]
    announcements: list[dict[str, Any]]
    final: RunState


def run_path(*, run_id: int, start: RunState, steps: list[Step], fence: int) -> RunPath:
    """``run_transition`` for the loop's entry (ANALYZING → SIGNAL_DETECTED →
    ENTERING_POSITION), written with the bracket's intent in one statement
    (``apps.orders.brackets.bracket_place``), and for its close (POSITION_OPEN → CLOSING →
    ANALYZING, written with the trade): ONE conditional UPDATE from ``start`` to the last
    state and the transition rows. Each move must be one ``run_transition`` allows."""
    run_path_check(start, steps)
    state = start
    rows: list[RunTransition] = []
    announcements: list[dict[str, Any]] = []
    for step in steps:
        rows.append(
            RunTransition(
                run_id=run_id,
                from_state=state,
                to_state=step.to,
                reason=step.reason,
                message=step.message,
                context=_jsonable(step.context),
                actor="loop",
            )
        )
        announcements.append(
            {
                "run_id": run_id,
                "from": str(state),
                "to": str(step.to),
                "reason": step.reason,
                "message": step.message,
                "context": step.context,
            }
        )
        state = step.to
    guard = GuardedUpdate(
        StrategyRun,
        set={"state": str(state)},
        where={"id": run_id, "state": str(start), "is_active": True, "fence": fence},
    )
    return RunPath(guard=guard, rows=rows, announcements=announcements, final=state)


def run_path_check(start: RunState, steps: list[Step]) -> RunState:
    """The last state of ``steps`` from ``start``; ValueError when a move is not one of the
    loop's path (``run_path`` checks this first; callers that build the path later check it
    before they act)."""
    state = start
    for step in steps:
        if step.to in (RunState.ERROR, RunState.PAUSED) or state not in _ALLOWED_FROM[step.to]:
            raise ValueError(f"{state} → {step.to} is not a move of the loop's path")
        state = step.to
    return state


def run_path_written(path: RunPath) -> None:
    """After the caller wrote ``path``: the state gauge (the events go with ``run_announce``)."""
    _state_gauge(path.final)


def _announce(item: dict[str, Any]) -> None:
    to = item["to"]
    event_record(
        kind=_ALERT_KIND.get(to, "run_state"),
        message=f"Run {item['run_id']}: {item['from']} → {to} ({item['reason']})"
        + (f": {item['message']}" if item["message"] else ""),
        level={"ERROR": "error", "PAUSED": "warning"}.get(to, "info"),
        context={"from": item["from"], "to": to, "reason": item["reason"], **item["context"]},
        run_id=item["run_id"],
        alert=to in _ALERT_KIND,
    )


def run_announce(pending: list[dict[str, Any]]) -> None:
    """Send the events of transitions written with ``pending`` (rows exist already)."""
    while pending:
        _announce(pending.pop(0))


def _state_gauge(state: str) -> None:
    for one in RunState:
        metrics.LOOP_STATE.labels(state=one.value).set(1 if one == state else 0)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


# --- trader actions -----------------------------------------------------------------------------


def _validate_start(strategy: Any, params: Any, instrument: Any) -> dict[str, Any]:
    from apps.strategies.base import ParamError
    from apps.strategies.registry import UnknownStrategy, get_strategy

    if not isinstance(strategy, str) or not strategy:
        raise RunInputError("strategy", "required")
    if params is not None and not isinstance(params, dict):
        raise RunInputError("params", "must be an object")
    if not isinstance(instrument, str) or not instrument:
        raise RunInputError("instrument", "required")
    try:
        built = get_strategy(strategy, params or {})
    except UnknownStrategy:
        raise RunInputError("strategy", f"unknown strategy {strategy!r}") from None
    except ParamError as exc:
        raise RunInputError(f"params.{exc.field}", exc.message) from None
    known = _known_instruments()
    if known is not None and instrument not in known:
        raise RunInputError("instrument", f"unknown instrument {instrument!r}")
    return dict(built.params)


def _known_instruments() -> set[str] | None:
    try:
        from apps.brokers.services import instrument_specs
    except ImportError:
        return None
    try:
        return {spec.name for spec in instrument_specs()}
    except Exception:  # the broker may be unreachable; the loop refuses unknown names later
        log.warning("instrument list not readable; not checking the name", exc_info=True)
        return None


def _active_account_id() -> int | None:
    try:
        from apps.brokers.models import BrokerAccount
    except ImportError:
        return None
    account = BrokerAccount.objects.filter(is_active=True).only("id").first()
    return account.id if account else None


def _risk_snapshot() -> dict[str, Any]:
    from apps.risk.selectors import risk_settings_snapshot

    return _jsonable(risk_settings_snapshot())


def run_start(
    *,
    strategy: str,
    params: dict[str, Any] | None,
    instrument: str,
    user: Any = None,
    account_id: int | str | None = "active",
) -> StrategyRun:
    """Create THE active run (IDLE) and launch its loop. RunConflict if one is active.

    ``account_id`` "active" means the active broker account (None when there is none = paper).
    """
    clean = _validate_start(strategy, params, instrument)
    if account_id == "active":
        account_id = _active_account_id()
    try:
        with transaction.atomic():
            run = StrategyRun.objects.create(
                strategy=strategy,
                params=clean,
                instrument=instrument,
                broker_account_id=account_id,
                risk_settings=_risk_snapshot(),
                state=RunState.IDLE,
                started_by=user if getattr(user, "pk", None) else None,
            )
            RunTransition.objects.create(
                run=run,
                from_state=RunState.IDLE,
                to_state=RunState.IDLE,
                reason="started",
                actor=_actor(user),
                context={"strategy": strategy, "params": clean, "instrument": instrument},
            )
            event_record(
                kind="run_started",
                message=f"Run {run.id} started: {strategy} on {instrument}",
                context={"params": clean, "account_id": account_id},
                run_id=run.id,
            )
    except IntegrityError:
        raise RunConflict("RUN_ACTIVE", "A strategy run is already active") from None
    transaction.on_commit(lambda: launch_loop(run.id))
    return run


def _actor(user: Any) -> str:
    name = user.get_username() if getattr(user, "pk", None) else ""
    return f"user:{name}" if name else "system"


def _active_or_conflict() -> StrategyRun:
    run = StrategyRun.objects.filter(is_active=True).first()
    if run is None:
        raise RunConflict("NO_ACTIVE_RUN", "No strategy run is active")
    return run


def run_stop(*, user: Any = None, reason: str = "stopped by trader") -> StrategyRun:
    """End the active run. Its loop sees ``is_active`` false and exits; open positions stay
    protected by their exchange-side stop and target, and the next run adopts them."""
    run = _active_or_conflict()
    with transaction.atomic():
        changed = StrategyRun.objects.filter(id=run.id, is_active=True).update(
            is_active=False,
            state=RunState.IDLE,
            stopped_at=timezone.now(),
            stopped_by=user if getattr(user, "pk", None) else None,
        )
        if not changed:
            raise RunConflict("NO_ACTIVE_RUN", "The run was stopped already")
        control_changed()
        RunTransition.objects.create(
            run_id=run.id,
            from_state=run.state,
            to_state=RunState.IDLE,
            reason="stopped",
            message=reason,
            actor=_actor(user),
        )
        event_record(kind="run_stopped", message=f"Run {run.id} stopped: {reason}", run_id=run.id)
    _state_gauge(RunState.IDLE)
    run.refresh_from_db()
    return run


def run_pause(*, user: Any = None, reason: str = "paused_by_trader") -> StrategyRun:
    run = _active_or_conflict()
    if not run_transition(
        run_id=run.id, to=RunState.PAUSED, reason=reason, actor=_actor(user), expected=LOOP_STATES
    ):
        raise RunConflict("RUN_NOT_RUNNING", f"A run in {run.state} cannot be paused")
    run.refresh_from_db()
    return run


def run_resume(*, user: Any = None) -> StrategyRun:
    """PAUSED → IDLE and launch the loop (which reconciles first). Not a way out of ERROR."""
    run = _active_or_conflict()
    if run.state == RunState.ERROR:
        raise RunConflict("RUN_IN_ERROR", "A run in ERROR resumes only by restart")
    _require_connected(run)
    if not run_transition(
        run_id=run.id,
        to=RunState.IDLE,
        reason="resumed",
        actor=_actor(user),
        expected=(RunState.PAUSED,),
        extra={"pause_reason": ""},
    ):
        raise RunConflict("RUN_NOT_PAUSED", f"A run in {run.state} cannot be resumed")
    transaction.on_commit(lambda: launch_loop(run.id))
    run.refresh_from_db()
    return run


def _require_connected(run: StrategyRun) -> None:
    """No order goes out on an account marked disconnected: reconnect it first."""
    if run.broker_account_id is None:
        return
    from apps.brokers.models import BrokerAccount

    state = (
        BrokerAccount.objects.filter(pk=run.broker_account_id)
        .values_list("state", flat=True)
        .first()
    )
    if state is not None and state != "connected":
        raise RunConflict(
            "BROKER_DISCONNECTED", f"The broker account is {state}: reconnect it before resuming"
        )


def run_restart(*, user: Any = None) -> StrategyRun:
    """ERROR → IDLE (the only way out of ERROR), clearing the error; the loop reconciles first."""
    run = _active_or_conflict()
    if not run_transition(
        run_id=run.id,
        to=RunState.IDLE,
        reason="restarted",
        actor=_actor(user),
        expected=(RunState.ERROR,),
        context={"error": run.error_message},
        extra={"error_message": "", "error_context": {}, "error_at": None, "pause_reason": ""},
    ):
        raise RunConflict("RUN_NOT_IN_ERROR", f"Only a run in ERROR restarts (it is {run.state})")
    transaction.on_commit(lambda: launch_loop(run.id))
    run.refresh_from_db()
    return run


def run_heartbeat(*, run_id: int, fence: int) -> bool:
    """Stamp the loop's heartbeat; False when the run is no longer ours (stopped, taken over)."""
    return bool(
        StrategyRun.objects.filter(id=run_id, fence=fence, is_active=True).update(
            heartbeat_at=timezone.now()
        )
    )


def launch_loop(run_id: int) -> None:
    """Queue the loop task on the runner queue (it exits at once if another loop holds the lock)."""
    from apps.strategies.tasks import run_loop

    try:
        run_loop.apply_async(args=[run_id], queue="runner")
    except Exception:  # Redis down: the supervisor launches it once it is back
        log.warning("run %s: loop not queued", run_id, exc_info=True)
