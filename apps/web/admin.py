from django.contrib import admin

from .models import BacktestJob, TraderPreferences


@admin.register(TraderPreferences)
class TraderPreferencesAdmin(admin.ModelAdmin):
    list_display = ("user", "strategy", "instrument", "updated_at")


@admin.register(BacktestJob)
class BacktestJobAdmin(admin.ModelAdmin):
    list_display = ("id", "strategy", "dataset", "instrument", "status", "progress", "created_at")
    list_filter = ("status", "strategy")
    readonly_fields = ("result", "error")
