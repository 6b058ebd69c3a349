"""Runner settings: Django settings first, then the environment (child processes in tests)."""

from __future__ import annotations

import os

from django.conf import settings

DEFAULTS = {
    "RUNNER_LOCK_TTL_MS": 15000,
    "RUNNER_LAUNCH_TTL_MS": 20000,
    "RUNNER_CANDLE_WAIT_S": 1.0,
    "RUNNER_POSITION_POLL_S": 2.0,
    "RUNNER_UNPROTECTED_POLICY": "protect",  # protect (place a stop) or close
}


def runner_setting(name: str):
    if hasattr(settings, name):
        return getattr(settings, name)
    raw = os.environ.get(f"TRADEBAAS_{name}")
    default = DEFAULTS[name]
    if raw is None:
        return default
    return type(default)(raw)
