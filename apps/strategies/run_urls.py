from django.urls import path

from apps.strategies import run_api

urlpatterns = [
    path("strategy/start", run_api.strategy_start, name="strategy-start"),
    path("strategy/stop", run_api.strategy_stop, name="strategy-stop"),
    path("strategy/pause", run_api.strategy_pause, name="strategy-pause"),
    path("strategy/resume", run_api.strategy_resume, name="strategy-resume"),
    path("strategy/restart", run_api.strategy_restart, name="strategy-restart"),
    path("strategy/status", run_api.strategy_status, name="strategy-status"),
    path("events", run_api.events, name="events"),
]
