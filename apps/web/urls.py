from django.urls import path

from . import pages, views

app_name = "web"

urlpatterns = [
    path("strategy/params", views.strategy_params, name="strategy-params"),
    path("strategy/start", views.strategy_start, name="strategy-start"),
    path("strategy/stop", views.strategy_stop, name="strategy-stop"),
    path("strategy/restart", views.strategy_restart, name="strategy-restart"),
    path("risk/preview", views.risk_preview, name="risk-preview"),
    path("kill", views.kill_switch, name="kill"),
    path("position/close", views.position_close, name="position-close"),
    path("chart", views.chart_data, name="chart-data"),
    path("broker/reconnect", views.broker_reconnect, name="broker-reconnect"),
    path("settings/broker", views.settings_broker, name="settings-broker"),
    path("settings/risk", views.settings_risk, name="settings-risk"),
    path("settings/notifications", views.settings_notifications, name="settings-notifications"),
    path("trades/", pages.trades, name="trades"),
    path("trades.csv", pages.trades_csv, name="trades-csv"),
    path("metrics/", pages.performance, name="performance"),
    path("backtest/", pages.backtest, name="backtest"),
    path("backtest/<int:job_id>", pages.backtest_status, name="backtest-status"),
    path("backtest/<int:job_id>/chart.png", pages.backtest_chart, name="backtest-chart"),
]
