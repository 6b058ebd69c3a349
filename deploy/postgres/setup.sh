#!/usr/bin/env bash
# PostgreSQL for Tradebaas: a `tradebaas` role with a random password (kept in
# /etc/tradebaas/db_password, 0640 root:tradebaas), a `tradebaas` database it owns, listening on
# loopback only, scram-sha-256 authentication. Idempotent.
set -euo pipefail
install -d -o root -g tradebaas -m 0750 /etc/tradebaas
if [[ ! -f /etc/tradebaas/db_password ]]; then
  head -c 32 /dev/urandom | base64 | tr -d '/+=' | head -c 40 >/etc/tradebaas/db_password
  chown root:tradebaas /etc/tradebaas/db_password
  chmod 0640 /etc/tradebaas/db_password
fi
password="$(cat /etc/tradebaas/db_password)"
systemctl enable --now postgresql
sudo -u postgres psql -v ON_ERROR_STOP=1 -q <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tradebaas') THEN
    CREATE ROLE tradebaas LOGIN PASSWORD '$password';
  ELSE
    ALTER ROLE tradebaas LOGIN PASSWORD '$password';
  END IF;
END \$\$;
SQL
sudo -u postgres psql -tAc "SELECT 1 FROM pg_database WHERE datname = 'tradebaas'" | grep -q 1 \
  || sudo -u postgres createdb --owner=tradebaas --encoding=UTF8 tradebaas
# Loopback only (the default on Debian); password authentication with scram-sha-256.
conf_dir="$(sudo -u postgres psql -tAc 'SHOW config_file' | xargs dirname)"
cat >"$conf_dir/conf.d/tradebaas.conf" <<CONF
listen_addresses = 'localhost'
password_encryption = 'scram-sha-256'
# Modest settings for a small VPS (2 cores, 2-4 GB RAM)
shared_buffers = '256MB'
effective_cache_size = '768MB'
work_mem = '8MB'
maintenance_work_mem = '64MB'
max_connections = 100
log_min_duration_statement = '500ms'
CONF
systemctl reload postgresql
echo "postgres: role and database tradebaas ready"
