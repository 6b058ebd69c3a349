"""Every page needs a logged-in user; every API call a session or a token.

Pages redirect anonymous visitors to the login page; ``/api/`` is left to DRF, whose
authentication classes answer 401 in the shared error shape. Only the login page, health probes,
the metrics endpoint (its own address check) and static files are open.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login

OPEN_PREFIXES = ("/accounts/login/", "/healthz", "/readyz", "/metrics", "/api/", "/admin/")


class LoginRequiredMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.static_prefix = "/" + settings.STATIC_URL.lstrip("/")

    def __call__(self, request):
        path = request.path_info
        if (
            request.user.is_authenticated
            or path.startswith(OPEN_PREFIXES)
            or path.startswith(self.static_prefix)
        ):
            return self.get_response(request)
        return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
