from __future__ import annotations

from django.conf import settings
from django.db import models


class TraderPreferences(models.Model):
    """What the strategy card showed last: the choice survives reloads and restarts."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    strategy = models.CharField(max_length=64, blank=True)
    params = models.JSONField(default=dict, blank=True)
    instrument = models.CharField(max_length=64, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "trader preferences"

    def __str__(self) -> str:
        return f"preferences of {self.user_id}"


class BacktestJob(models.Model):
    """A backtest started from the page: run by a Celery task on the default queue."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    strategy = models.CharField(max_length=64)
    params = models.JSONField(default=dict, blank=True)
    dataset = models.CharField(max_length=128)
    instrument = models.CharField(max_length=64)
    risk_mode = models.CharField(max_length=16)
    risk_value = models.DecimalField(max_digits=20, decimal_places=8)
    equity = models.DecimalField(max_digits=30, decimal_places=10)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    chart_path = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ("-id",)

    def __str__(self) -> str:
        return f"backtest {self.pk} {self.strategy} {self.status}"
