"""A strategy run (the one loop that trades) and the rows of its state transitions.

At most one run is active at a time: a partial unique index on ``is_active`` (a database
constraint, on PostgreSQL and SQLite alike), not a check in Python. A run moves between states
only through ``apps.strategies.services.run_transition``, a conditional UPDATE: two processes
can never both move the same run out of the same state.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class RunState(models.TextChoices):
    IDLE = "IDLE", "Idle"
    ANALYZING = "ANALYZING", "Analyzing"
    SIGNAL_DETECTED = "SIGNAL_DETECTED", "Signal detected"
    ENTERING_POSITION = "ENTERING_POSITION", "Entering position"
    POSITION_OPEN = "POSITION_OPEN", "Position open"
    CLOSING = "CLOSING", "Closing"
    PAUSED = "PAUSED", "Paused"
    ERROR = "ERROR", "Error"


# States in which the loop should be running (the supervisor restarts a dead loop in these).
LOOP_STATES = (
    RunState.IDLE,
    RunState.ANALYZING,
    RunState.SIGNAL_DETECTED,
    RunState.ENTERING_POSITION,
    RunState.POSITION_OPEN,
    RunState.CLOSING,
)


class StrategyRun(models.Model):
    # The broker account the run trades on (apps.brokers.BrokerAccount id); None = paper.
    broker_account_id = models.BigIntegerField(null=True, blank=True)
    strategy = models.CharField(max_length=64)
    params = models.JSONField(default=dict, blank=True)
    instrument = models.CharField(max_length=64)
    risk_settings = models.JSONField(
        default=dict, blank=True, help_text="The risk settings in force when the run started"
    )
    state = models.CharField(max_length=24, choices=RunState.choices, default=RunState.IDLE)
    is_active = models.BooleanField(default=True)
    pause_reason = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    error_context = models.JSONField(default=dict, blank=True)
    error_at = models.DateTimeField(null=True, blank=True)
    fence = models.BigIntegerField(default=0, help_text="Fencing number of the loop that owns it")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    stopped_at = models.DateTimeField(null=True, blank=True)
    stopped_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ("-id",)
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"],
                condition=models.Q(is_active=True),
                name="strategy_run_one_active",
            )
        ]

    def __str__(self) -> str:
        return f"run {self.pk} {self.strategy} {self.instrument} {self.state}"


class RunTransition(models.Model):
    run = models.ForeignKey(StrategyRun, on_delete=models.CASCADE, related_name="transitions")
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    from_state = models.CharField(max_length=24, choices=RunState.choices)
    to_state = models.CharField(max_length=24, choices=RunState.choices)
    reason = models.CharField(max_length=64, help_text="A short code: started, signal, ...")
    message = models.TextField(blank=True)
    context = models.JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=64, blank=True, help_text="loop, supervisor, user:<name>")

    class Meta:
        ordering = ("-at", "-id")

    def __str__(self) -> str:
        return f"{self.from_state} -> {self.to_state} ({self.reason})"
