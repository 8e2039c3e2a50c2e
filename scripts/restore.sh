#!/usr/bin/env bash
# Restore the newest verified-good backup of a series over a database, the
# careful way: dbrestore verifies it first, takes a safety backup of the
# target into the store, asks you to type the database's name (unless
# --yes is passed through), restores, compares row counts and audits.
#
#   scripts/restore.sh TARGET_URL [--env ENV] [--database DB] [--before TIME] [dbrestore flags...]
#
#   DBSAFE_STORE, DBSAFE_IDENTITY_FILE as for dbrestore; BIN_DIR as for backup.sh.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 TARGET_URL [--env ENV] [--database DB] [--before TIME] [dbrestore flags...]" >&2
  exit 2
fi
target=$1
shift
: "${DBSAFE_STORE:?set DBSAFE_STORE to the store}"
bin=${BIN_DIR:+$BIN_DIR/}

pick=(--latest)
for a in "$@"; do
  if [ "$a" = "--before" ] || [ "$a" = "--timestamp" ] || [ "$a" = "--name" ]; then pick=(); fi
done
echo "restore.sh: what will happen:" >&2
"${bin}dbrestore" --store "$DBSAFE_STORE" "${pick[@]}" --target "$target" "$@" --dry-run >&2
exec "${bin}dbrestore" --store "$DBSAFE_STORE" "${pick[@]}" --target "$target" "$@"
