#!/usr/bin/env bash
# The morning check: rehearse a restore of the newest backup of every series
# in the store, then report store health; exit non-zero unless all is good.
#
#   scripts/verify.sh
#
#   DBSAFE_STORE           the store (required)
#   DBSAFE_IDENTITY_FILE   age identity for encrypted backups
#   VERIFY_LEVEL           quick | full | restore (default: restore)
#   VERIFY_SCRATCH         server URL for scratch databases (PostgreSQL/MariaDB dumps)
#   MAX_AGE, MIN_COUNT     health thresholds (default 26h, 1)
#   BIN_DIR                where the dbsafe binaries are (default: PATH)
set -euo pipefail

: "${DBSAFE_STORE:?set DBSAFE_STORE to the store}"
bin=${BIN_DIR:+$BIN_DIR/}
args=(--store "$DBSAFE_STORE" --latest --level "${VERIFY_LEVEL:-restore}")
if [ -n "${VERIFY_SCRATCH:-}" ]; then args+=(--scratch "$VERIFY_SCRATCH"); fi

status=0
"${bin}dbverify" "${args[@]}" || status=$?
"${bin}dbverify" --status --store "$DBSAFE_STORE" --max-age "${MAX_AGE:-26h}" --min-count "${MIN_COUNT:-1}" || status=$?
exit "$status"
