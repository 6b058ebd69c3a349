from django.apps import AppConfig


class WebConfig(AppConfig):
    """The trader's pages: they compose every app's state and call the same services as the API."""

    name = "apps.web"
    label = "web"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import live

        live.install()
