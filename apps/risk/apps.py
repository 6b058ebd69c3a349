from django.apps import AppConfig


class RiskConfig(AppConfig):
    name = "apps.risk"
    label = "risk"
    default_auto_field = "django.db.models.BigAutoField"
