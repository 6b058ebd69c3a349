#!/usr/bin/env bash
# Firewall (ufw): SSH, HTTP and HTTPS in; everything else (PostgreSQL 5432, Redis 6379, daphne 8000,
# worker metrics 9101/9102, Prometheus 9090, Grafana 3000) stays on loopback and is refused from outside.
# Set SSH_FROM=203.0.113.0/24 to allow SSH only from your network.
set -euo pipefail
ufw --force reset
ufw default deny incoming
ufw default allow outgoing   # the exchanges' APIs, Telegram, Sentry, package mirrors
if [[ -n "${SSH_FROM:-}" ]]; then
  ufw allow from "$SSH_FROM" to any port 22 proto tcp
else
  ufw limit 22/tcp
fi
ufw allow 80/tcp
ufw allow 443/tcp
for port in 5432 6379 8000 9090 9101 9102 3000; do
  ufw deny "$port"
done
ufw --force enable
ufw status verbose
