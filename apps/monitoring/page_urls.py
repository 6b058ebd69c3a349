"""The trader's pages live in apps.web; the dashboard is the site's root."""

from django.urls import include, path

from apps.web.views import dashboard

urlpatterns = [
    path("", dashboard, name="dashboard"),
    path("web/", include("apps.web.urls")),
]
