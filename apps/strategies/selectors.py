"""Reads about strategy runs: the active run, its status document, the audit events."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from apps.strategies.models import RunTransition, StrategyRun


def active_run() -> StrategyRun | None:
    return StrategyRun.objects.filter(is_active=True).first()


def latest_run() -> StrategyRun | None:
    return StrategyRun.objects.order_by("-id").first()


def run_transitions(run: StrategyRun, limit: int = 20) -> QuerySet[RunTransition]:
    return run.transitions.all()[:limit]


def run_status(run: StrategyRun | None = None) -> dict[str, Any]:
    """What the page and ``GET /api/v2/strategy/status`` show about the active (or last) run."""
    run = run or active_run() or latest_run()
    if run is None:
        return {"active": False, "run": None}
    from apps.orders.selectors import current_bracket

    bracket = current_bracket(run_id=run.id)
    return {
        "active": run.is_active,
        "run": {
            "id": run.id,
            "strategy": run.strategy,
            "params": run.params,
            "instrument": run.instrument,
            "account_id": run.broker_account_id,
            "state": run.state,
            "pause_reason": run.pause_reason,
            "error": (
                {
                    "message": run.error_message,
                    "context": run.error_context,
                    "at": run.error_at.isoformat() if run.error_at else None,
                }
                if run.error_message
                else None
            ),
            "risk_settings": run.risk_settings,
            "fence": run.fence,
            "heartbeat_at": run.heartbeat_at.isoformat() if run.heartbeat_at else None,
            "started_at": run.started_at.isoformat(),
            "stopped_at": run.stopped_at.isoformat() if run.stopped_at else None,
            "transitions": [
                {
                    "at": t.at.isoformat(),
                    "from": t.from_state,
                    "to": t.to_state,
                    "reason": t.reason,
                    "message": t.message,
                    "actor": t.actor,
                }
                for t in run_transitions(run)
            ],
        },
        "bracket": bracket,
        "analysis": run_checkpoints() if run.is_active else None,
    }


def run_checkpoints() -> dict[str, Any] | None:
    """What the strategy looked at in its last analysis (stored by the loop for the page)."""
    import json

    from apps.strategies.runner.loop import CHECKPOINTS_KEY
    from tradebaas.redis import redis_client, rkey

    try:
        raw = redis_client().get(rkey(CHECKPOINTS_KEY))
    except Exception:
        return None
    return json.loads(raw) if raw else None


def events(*, run_id: int | None = None, kind: str | None = None, limit: int = 100):
    """Audit events, newest first."""
    from apps.monitoring.models import Event

    queryset = Event.objects.all()
    if run_id is not None:
        queryset = queryset.filter(run_id=run_id)
    if kind:
        queryset = queryset.filter(kind=kind)
    return queryset[: max(1, min(limit, 500))]
