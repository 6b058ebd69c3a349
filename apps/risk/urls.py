from django.urls import path

from apps.risk import api

urlpatterns = [
    path("risk-settings", api.risk_settings, name="api-risk-settings"),
    path("risk/preview", api.risk_preview, name="api-risk-preview"),
]
