"""Liveness (``/healthz``) and readiness (``/readyz``): database, Redis, workers and beat."""

from __future__ import annotations

import time

from django.db import connection
from django.http import HttpRequest, JsonResponse

from tradebaas.redis import redis_client, rkey

HEARTBEAT_TTL = 60
HEARTBEAT_FRESH = 20.0


def record_heartbeat(name: str) -> None:
    redis_client().set(rkey(f"hb:{name}"), f"{time.time():.3f}", ex=HEARTBEAT_TTL)


def heartbeats() -> dict[str, float]:
    """Age in seconds of every heartbeat recorded within the last minute."""
    client = redis_client()
    prefix = rkey("hb:")
    now = time.time()
    ages: dict[str, float] = {}
    for key in client.scan_iter(match=prefix + "*", count=200):
        value = client.get(key)
        if value is not None:
            ages[key.decode()[len(prefix) :]] = round(now - float(value), 3)
    return ages


def _check_database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True}
    except Exception as exc:
        return {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}


def _fresh(ages: dict[str, float], match, what: str) -> dict:
    found = {name: age for name, age in ages.items() if match(name)}
    if not found:
        return {"ok": False, "reason": f"no {what} heartbeat in the last {HEARTBEAT_TTL} s"}
    youngest = min(found.values())
    if youngest > HEARTBEAT_FRESH:
        return {"ok": False, "reason": f"last {what} heartbeat {youngest:.0f} s ago"}
    return {"ok": True, "age_seconds": youngest}


def readiness() -> dict:
    checks: dict[str, dict] = {"database": _check_database()}
    try:
        redis_client().ping()
        checks["redis"] = {"ok": True}
        ages = heartbeats()
    except Exception as exc:
        checks["redis"] = {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}
        ages = {}
    checks["worker_default"] = _fresh(
        ages,
        lambda n: n.startswith("worker:") and "default" in n.split(":")[1].split(","),
        "default worker",
    )
    checks["worker_runner"] = _fresh(
        ages,
        lambda n: n.startswith("worker:") and "runner" in n.split(":")[1].split(","),
        "runner worker",
    )
    checks["beat"] = _fresh(ages, lambda n: n == "beat", "beat")
    return {"ok": all(c["ok"] for c in checks.values()), "checks": checks}


def healthz(_request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def readyz(_request: HttpRequest) -> JsonResponse:
    report = readiness()
    return JsonResponse(report, status=200 if report["ok"] else 503)
