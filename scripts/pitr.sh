#!/usr/bin/env bash
# Point-in-time recovery of PostgreSQL next to the damaged server: the newest
# base backup before TIME, WAL replayed by PostgreSQL itself up to TIME, on
# its own port, promoted, and a report of the last transaction it replayed.
#
#   scripts/pitr.sh TIME PGDATA [PORT [DBRESTORE-FLAGS...]]
#
#   TIME    "YYYY-MM-DD HH:MM:SS" (UTC), RFC 3339, or `latest`
#   PGDATA  a new or empty directory for the recovered cluster
#   PORT    its port (default 5433), so it can run beside the original
#   DBRESTORE-FLAGS  passed on: --target-timeline N when TIME lies on several
#           timelines (exit 2 lists them), --archive for the new primary, ...
#   DBSAFE_STORE, DBSAFE_IDENTITY_FILE as for dbrestore; BIN_DIR as for backup.sh.
#
# Then compare, copy the rows you lost back (pg_dump -t ... | psql), or point
# the application at the recovered server.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 TIME PGDATA [PORT [DBRESTORE-FLAGS...]]" >&2
  exit 2
fi
: "${DBSAFE_STORE:?set DBSAFE_STORE to the store}"
bin=${BIN_DIR:+$BIN_DIR/}
"${bin}dbrestore" --store "$DBSAFE_STORE" --target-time "$1" --pgdata "$2" --port "${3:-5433}" --start "${@:4}"
