from __future__ import annotations

from django.contrib import admin

from .models import Event, NotificationSettings


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "level", "kind", "message", "run_id", "bracket_id")
    list_filter = ("level", "kind")
    search_fields = ("message", "bracket_id")
    readonly_fields = ("created_at",)


@admin.register(NotificationSettings)
class NotificationSettingsAdmin(admin.ModelAdmin):
    list_display = ("__str__", "telegram_enabled", "telegram_chat_id", "remote_start_enabled")
    # The encrypted token is never shown; set it through the settings dialog or the API.
    exclude = ("telegram_bot_token_encrypted", "telegram_update_offset")
