#!/usr/bin/env bash
# Redis for Tradebaas: Celery broker, the runner lock, heartbeats, the Channels layer and the cache.
# Loopback only, protected mode, AOF persistence (queued tasks survive a restart), no eviction of
# keys (a lost lock or queued task is worse than an out-of-memory error that alerts).
set -euo pipefail
conf=/etc/redis/redis.conf
install -m 0640 -o redis -g redis "$(dirname "$0")/tradebaas.conf" /etc/redis/tradebaas.conf
grep -q '^include /etc/redis/tradebaas.conf' "$conf" || echo 'include /etc/redis/tradebaas.conf' >>"$conf"
systemctl enable redis-server
systemctl restart redis-server
redis-cli ping
