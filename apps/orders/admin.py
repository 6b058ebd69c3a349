from django.contrib import admin

from apps.orders.models import Bracket, Order, Trade


class OrderInline(admin.TabularInline):
    model = Order
    extra = 0
    readonly_fields = ("role", "label", "exchange_id", "status", "order_type", "amount")


@admin.register(Bracket)
class BracketAdmin(admin.ModelAdmin):
    list_display = ("bracket_id", "run_id", "instrument", "side", "amount", "state", "created_at")
    list_filter = ("state", "instrument", "linked")
    search_fields = ("bracket_id",)
    inlines = [OrderInline]


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ("label", "role", "exchange_id", "status", "order_type", "amount")
    list_filter = ("role", "status")
    search_fields = ("label", "exchange_id")


@admin.register(Trade)
class TradeAdmin(admin.ModelAdmin):
    list_display = ("bracket", "instrument", "side", "amount", "pnl", "pnl_usd", "exit_reason")
    list_filter = ("exit_reason", "instrument", "side")
