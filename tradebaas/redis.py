"""One Redis client per process, and the key prefix every key of ours carries."""

from __future__ import annotations

import functools

import redis
from django.conf import settings


@functools.cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
    )


def rkey(name: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}{name}"
