"""The login page (throttled against guessing), the metrics endpoint and the API token page."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


def client_address(request: HttpRequest) -> str:
    # Behind nginx the real address comes in X-Real-IP (see deploy/nginx); direct otherwise.
    return request.META.get("HTTP_X_REAL_IP") or request.META.get("REMOTE_ADDR", "")


def _throttle_key(request: HttpRequest) -> str:
    username = request.POST.get("username", "").strip().lower()
    digest = hashlib.sha256(f"{client_address(request)}|{username}".encode()).hexdigest()[:32]
    return f"login-failures:{digest}"


class ThrottledLoginView(auth_views.LoginView):
    """Django's login view; after N failures per address and username it refuses for a while."""

    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        failures = cache.get(_throttle_key(request), 0)
        if failures >= settings.LOGIN_THROTTLE_ATTEMPTS:
            form = self.get_form()
            minutes = max(1, settings.LOGIN_THROTTLE_WINDOW // 60)
            form.errors.clear()
            form.add_error(None, f"Too many failed attempts. Try again in {minutes} minutes.")
            response = self.render_to_response(self.get_context_data(form=form))
            response.status_code = 429
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        key = _throttle_key(self.request)
        cache.add(key, 0, timeout=settings.LOGIN_THROTTLE_WINDOW)
        try:
            cache.incr(key)
        except ValueError:
            cache.set(key, 1, timeout=settings.LOGIN_THROTTLE_WINDOW)
        return super().form_invalid(form)

    def form_valid(self, form):
        cache.delete(_throttle_key(self.request))
        return super().form_valid(form)


def metrics_view(request: HttpRequest) -> HttpResponse:
    allowed = client_address(request) in settings.METRICS_ALLOWED_IPS
    if not allowed and not (request.user.is_authenticated and request.user.is_staff):
        return HttpResponseForbidden("metrics: address not allowed")
    from prometheus_client import CollectorRegistry

    from .metrics import STATE_COLLECTOR

    # This process's metrics, plus the scrape-time numbers from the database and Redis.
    state = CollectorRegistry(auto_describe=False)
    state.register(STATE_COLLECTOR)
    body = generate_latest(REGISTRY) + generate_latest(state)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
