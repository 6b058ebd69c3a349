from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.monitoring import health
from apps.monitoring.views import ThrottledLoginView, metrics_view

api_v2 = [
    path("", include("apps.monitoring.urls")),
    path("", include("apps.brokers.urls")),
    path("", include("apps.risk.urls")),
    path("", include("apps.strategies.urls")),
    path("", include("apps.strategies.run_urls")),
    path("", include("apps.orders.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v2/", include(api_v2)),
    path("", include("apps.monitoring.page_urls")),
]
