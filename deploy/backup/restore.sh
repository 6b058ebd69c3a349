#!/usr/bin/env bash
# Restore a Tradebaas backup into a database.
#   restore.sh <backup.dump> <target DATABASE_URL> [--create]
# The target database must be empty (or pass --create with a URL whose database does not exist yet;
# ADMIN_DATABASE_URL, default: the same server's "postgres" database, is used to create it).
# Stop the services first when restoring over the live database (see docs/PRODUCTION_DEPLOYMENT.md).
set -euo pipefail

backup="${1:?usage: restore.sh <backup.dump> <target DATABASE_URL> [--create]}"
target="${2:?usage: restore.sh <backup.dump> <target DATABASE_URL> [--create]}"
create="${3:-}"

if [[ -f "$backup.sha256" ]]; then
  (cd "$(dirname "$backup")" && sha256sum --check --status "$(basename "$backup").sha256") \
    || { echo "checksum mismatch: $backup" >&2; exit 1; }
fi

if [[ "$create" == "--create" ]]; then
  dbname="${target##*/}"
  dbname="${dbname%%\?*}"
  admin="${ADMIN_DATABASE_URL:-${target%/*}/postgres}"
  psql --dbname="$admin" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \"$dbname\""
fi

pg_restore --dbname="$target" --no-owner --no-privileges --exit-on-error --single-transaction "$backup"
echo "restored $backup into ${target##*/}"
psql --dbname="$target" -tAc "SELECT 'tables: ' || count(*) FROM information_schema.tables WHERE table_schema = 'public'"
