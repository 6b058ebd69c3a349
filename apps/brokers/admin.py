"""Admin for broker accounts: never a secret, only the masked key; credentials change through
the connect flow (which tests them), not through a form."""

from __future__ import annotations

from django.contrib import admin

from apps.brokers.models import BrokerAccount


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
