from django.contrib import admin

from apps.strategies.models import RunTransition, StrategyRun


class RunTransitionInline(admin.TabularInline):
    model = RunTransition
    extra = 0
    can_delete = False
    readonly_fields = ("at", "from_state", "to_state", "reason", "message", "actor", "context")


@admin.register(StrategyRun)
class StrategyRunAdmin(admin.ModelAdmin):
    list_display = ("id", "strategy", "instrument", "state", "is_active", "fence", "started_at")
    list_filter = ("state", "is_active", "strategy")
    readonly_fields = ("fence", "heartbeat_at", "error_at")
    inlines = [RunTransitionInline]


@admin.register(RunTransition)
class RunTransitionAdmin(admin.ModelAdmin):
    list_display = ("run", "at", "from_state", "to_state", "reason", "actor")
    list_filter = ("to_state", "reason")
