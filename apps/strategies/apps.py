from django.apps import AppConfig


class StrategiesConfig(AppConfig):
    name = "apps.strategies"
    label = "strategies"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from apps.strategies.control import connect_signals

        connect_signals()
