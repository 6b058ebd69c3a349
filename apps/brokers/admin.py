"""Admin for broker accounts: never a secret, only the masked key; credentials change through
the connect flow (which tests them), not through a form. The paper exchange's stored state is
shown read-only: it is written by the paper session and cleared by ``manage.py paper_reset``."""

from __future__ import annotations

import json

from django.contrib import admin
from django.utils.html import format_html

from apps.brokers.models import BrokerAccount, PaperExchangeState
from apps.brokers.simulator.snapshot import snapshot_summary


@admin.register(BrokerAccount)
class BrokerAccountAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "broker",
        "label",
        "testnet",
        "masked_key",
        "is_active",
        "state",
        "state_since",
        "last_connected_at",
        "auto_reconnect",
    )
    list_filter = ("broker", "testnet", "is_active", "state", "auto_reconnect")
    search_fields = ("label", "broker")
    # The ciphertext columns are not editable=True, so ModelAdmin never renders them; the
    # masked key is the one trace of the key on the page.
    fields = (
        "broker",
        "label",
        "testnet",
        "masked_key",
        "auto_reconnect",
        "is_active",
        "state",
        "state_since",
        "last_error",
        "last_connected_at",
        "snapshot_equity",
        "snapshot_available",
        "snapshot_currency",
        "snapshot_at",
    )
    readonly_fields = (
        "broker",
        "testnet",
        "masked_key",
        "is_active",
        "state",
        "state_since",
        "last_error",
        "last_connected_at",
        "snapshot_equity",
        "snapshot_available",
        "snapshot_currency",
        "snapshot_at",
    )

    @admin.display(description="API key")
    def masked_key(self, obj: BrokerAccount) -> str:
        return obj.masked_key

    def has_add_permission(self, request) -> bool:
        return False  # accounts are created by connecting (which tests the credentials)


@admin.register(PaperExchangeState)
class PaperExchangeStateAdmin(admin.ModelAdmin):
    list_display = ("id", "format_version", "writes", "updated_at", "owner")
    fields = ("format_version", "writes", "updated_at", "owner", "summary")
    readonly_fields = fields

    @admin.display(description="What it holds")
    def summary(self, obj: PaperExchangeState) -> str:
        text = json.dumps(snapshot_summary(obj.data), indent=2, sort_keys=True)
        return format_html("<pre>{}</pre>", text)

    def has_add_permission(self, request) -> bool:
        return False  # written by the paper session only

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # manage.py paper_reset says what it clears
