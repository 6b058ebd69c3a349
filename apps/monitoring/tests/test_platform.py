"""The platform: auth everywhere, one error shape, health probes, settings that fail loudly."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from apps.monitoring.health import record_heartbeat


def test_healthz_is_open_and_alive(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


@pytest.mark.django_db
def test_readyz_reports_each_check_with_a_reason(client):
    response = client.get("/readyz")
    body = response.json()
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is True
    # No worker and no beat run in this test: readiness must say so, not pretend.
    assert response.status_code == 503
    assert body["checks"]["beat"]["ok"] is False
    assert "beat" in body["checks"]["beat"]["reason"]
    record_heartbeat("beat")
    record_heartbeat("worker:default:host:1")
    record_heartbeat("worker:runner:host:2")
    body = client.get("/readyz").json()
    assert body["ok"] is True, body


@pytest.mark.django_db
def test_anonymous_page_redirects_to_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    login = client.get(response["Location"])
    assert login.status_code == 200
    assert b'name="password"' in login.content


@pytest.mark.django_db
def test_anonymous_api_gets_401_in_the_shared_shape(anon_api_client):
    response = anon_api_client.get("/api/v2/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "NOT_AUTHENTICATED"


@pytest.mark.django_db
def test_token_authenticates_the_api(api_client):
    assert api_client.get("/api/v2/me").json()["username"] == "trader"
    schema = api_client.get("/api/v2/schema/", {"format": "json"})
    assert schema.status_code == 200
    assert b"Tradebaas API" in schema.content


@pytest.mark.django_db
def test_unknown_api_path_is_404_json(api_client):
    response = api_client.get("/api/v2/no-such-thing")
    assert response.status_code == 404


@pytest.mark.django_db
def test_logged_in_user_sees_the_dashboard(auth_client):
    assert auth_client.get("/").status_code == 200


@pytest.mark.django_db
def test_login_is_throttled_after_repeated_failures(client, user, settings):
    settings.LOGIN_THROTTLE_ATTEMPTS = 3
    for _ in range(3):
        response = client.post("/accounts/login/", {"username": "trader", "password": "wrong"})
        assert response.status_code == 200
    blocked = client.post(
        "/accounts/login/", {"username": "trader", "password": "correct-horse-battery-staple"}
    )
    assert blocked.status_code == 429
    assert b"Too many failed attempts" in blocked.content
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_login_succeeds_with_the_right_password(client, user, password):
    response = client.post("/accounts/login/", {"username": "trader", "password": password})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


@pytest.mark.django_db
def test_api_token_command_creates_then_prints_the_same_token(user, capsys):
    call_command("api_token", "trader")
    first = capsys.readouterr().out.strip()
    call_command("api_token", "trader")
    assert capsys.readouterr().out.strip() == first == Token.objects.get(user=user).key


@pytest.mark.django_db
def test_ensure_operator_creates_one_account_once(capsys, monkeypatch):
    monkeypatch.delenv("TRADEBAAS_ADMIN_PASSWORD", raising=False)
    call_command("ensure_operator")
    out = capsys.readouterr().out
    assert "password:" in out
    call_command("ensure_operator")
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.django_db
def test_admin_requires_staff_login(client):
    assert client.get("/admin/").status_code == 302


@pytest.mark.django_db
def test_metrics_allowed_from_loopback_only(client, settings):
    assert client.get("/metrics").status_code == 200
    settings.METRICS_ALLOWED_IPS = []
    assert client.get("/metrics").status_code == 403


def _check_with(env_overrides: dict[str, str | None], settings_module: str):
    import os

    env = {k: v for k, v in os.environ.items() if k not in env_overrides}
    env.update({k: v for k, v in env_overrides.items() if v is not None})
    env["DJANGO_SETTINGS_MODULE"] = settings_module
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


PRODUCTION_ENV = {
    "SECRET_KEY": "k" * 20 + "0123456789abcdefghijklmnopqrstuvwxyz",
    "ALLOWED_HOSTS": "trade.example.com",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
    "CREDENTIALS_KEYS": "lhMf7hrCrD6JbgQh4l6x_9uXfMD9ovdZbkhzyAcBGmE=",
}


@pytest.mark.slow
def test_production_settings_pass_check_deploy(settings):
    result = _check_with(
        {**PRODUCTION_ENV, "REDIS_URL": settings.REDIS_URL}, "tradebaas.settings.production"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SECRET_KEY", None, "SECRET_KEY"),
        ("CREDENTIALS_KEYS", "not-a-key", "CREDENTIALS_KEYS is malformed"),
        ("DATABASE_URL", "nosuchdb://x", "DATABASE_URL"),
        ("REDIS_URL", "http://wrong", "REDIS_URL is malformed"),
    ],
)
def test_missing_or_malformed_variable_names_itself(settings, name, value, message):
    env = {**PRODUCTION_ENV, "REDIS_URL": settings.REDIS_URL, name: value}
    result = _check_with(env, "tradebaas.settings.production")
    assert result.returncode != 0
    assert message in result.stderr
