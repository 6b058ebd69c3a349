#!/usr/bin/env bash
# Back up the Tradebaas database: pg_dump in custom format (compressed, restorable table by table),
# verified with pg_restore --list, written atomically, old backups pruned.
#   DATABASE_URL        postgres://user:pass@host:port/db   (required)
#   BACKUP_DIR          where to write (default /var/backups/tradebaas)
#   BACKUP_KEEP_DAYS    prune older files (default 14)
set -euo pipefail

: "${DATABASE_URL:?set DATABASE_URL}"
BACKUP_DIR="${BACKUP_DIR:-/var/backups/tradebaas}"
BACKUP_KEEP_DAYS="${BACKUP_KEEP_DAYS:-14}"
mkdir -p "$BACKUP_DIR"
umask 077

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
target="$BACKUP_DIR/tradebaas-$stamp.dump"
partial="$target.partial"
trap 'rm -f "$partial"' EXIT

pg_dump --dbname="$DATABASE_URL" --format=custom --compress=6 --no-owner --no-privileges --file="$partial"
# A dump that pg_restore cannot list is not a backup.
pg_restore --list "$partial" >/dev/null
mv "$partial" "$target"
sha256sum "$target" >"$target.sha256"
find "$BACKUP_DIR" -name 'tradebaas-*.dump*' -type f -mtime "+$BACKUP_KEEP_DAYS" -delete
echo "backup written: $target ($(stat -c %s "$target") bytes)"
