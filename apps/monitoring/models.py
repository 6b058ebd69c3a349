"""Audit events and the Telegram notification settings."""

from __future__ import annotations

from django.db import models

LEVELS = ("debug", "info", "warning", "error", "critical")


class Event(models.Model):
    """One line of the audit log: what happened, when, to which run and bracket, with context."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=64, db_index=True)
    level = models.CharField(
        max_length=16, default="info", choices=[(level, level) for level in LEVELS]
    )
    message = models.TextField()
    context = models.JSONField(default=dict, blank=True)
    run_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    bracket_id = models.CharField(max_length=64, blank=True, default="", db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["run_id", "-created_at"], name="event_run_recent")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.level} {self.kind}: {self.message[:60]}"


# Alert kinds and the flag on NotificationSettings that enables each. Kinds not listed are sent
# whenever Telegram is enabled (a new kind should never be silently dropped).
ALERT_KIND_FLAGS = {
    "run_error": "alert_run_errors",
    "broker_disconnect": "alert_broker_disconnects",
    "bracket_opened": "alert_brackets",
    "bracket_closed": "alert_brackets",
    "rollback_failed": "alert_orphans",
    "orphan_cancelled": "alert_orphans",
    "protection_tripped": "alert_protections",
    "daily_summary": "alert_daily_summary",
    "lock_lost": "alert_run_errors",
    "bracket_rolled_back": "alert_orphans",
    "position_adopted": "alert_brackets",
    "position_protected": "alert_brackets",
}


class NotificationSettings(models.Model):
    """The one row of Telegram settings (a singleton, pk=1). The bot token is stored encrypted."""

    telegram_enabled = models.BooleanField(default=False)
    telegram_bot_token_encrypted = models.TextField(blank=True, default="")
    telegram_chat_id = models.CharField(max_length=64, blank=True, default="")
    alert_run_errors = models.BooleanField(default=True)
    alert_broker_disconnects = models.BooleanField(default=True)
    alert_brackets = models.BooleanField(default=True)
    alert_orphans = models.BooleanField(default=True)
    alert_protections = models.BooleanField(default=True)
    alert_daily_summary = models.BooleanField(default=True)
    # /start and /restart over Telegram: off unless the trader turns it on.
    remote_start_enabled = models.BooleanField(default=False)
    # The next getUpdates offset of the command bot (so a restart does not replay commands).
    telegram_update_offset = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "notification settings"
        verbose_name_plural = "notification settings"

    def __str__(self) -> str:
        return "Notification settings"

    def save(self, *args, **kwargs) -> None:
        self.pk = 1
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> NotificationSettings:
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj

    @property
    def telegram_bot_token(self) -> str:
        from .secrets import decrypt

        return (
            decrypt(self.telegram_bot_token_encrypted) if self.telegram_bot_token_encrypted else ""
        )

    @telegram_bot_token.setter
    def telegram_bot_token(self, value: str) -> None:
        from .secrets import encrypt

        self.telegram_bot_token_encrypted = encrypt(value.strip()) if value else ""

    def kind_enabled(self, kind: str) -> bool:
        flag = ALERT_KIND_FLAGS.get(kind)
        return True if flag is None else bool(getattr(self, flag))

    @property
    def telegram_ready(self) -> bool:
        return bool(
            self.telegram_enabled and self.telegram_bot_token_encrypted and self.telegram_chat_id
        )
