"""Admin for the risk settings: the one row, validated by the model's clean()."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from apps.risk.models import RiskSettings
from apps.risk.services import EDITABLE_FIELDS, risk_settings_update


@admin.register(RiskSettings)
class RiskSettingsAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "mode",
        "value",
        "leverage_cap",
        "max_open_trades",
        "include_fees",
        "cooldown_minutes",
        "daily_loss_limit_pct",
        "max_drawdown_pct",
        "updated_at",
    )
    list_filter = ("mode", "include_fees")
    readonly_fields = ("updated_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A singleton: the row exists once (created on first read) and is only edited.
        return not RiskSettings.objects.exists()

    def save_model(self, request: HttpRequest, obj: RiskSettings, form, change: bool) -> None:
        # Through the service, like the API: same validation, and the change is an event.
        changes = {
            name: getattr(obj, name) for name in EDITABLE_FIELDS if name in form.changed_data
        }
        if not RiskSettings.objects.filter(pk=obj.pk).exists():
            super().save_model(request, obj, form, change)
        elif changes:
            risk_settings_update(**changes)

    def has_delete_permission(self, request: HttpRequest, obj: RiskSettings | None = None) -> bool:
        return False
