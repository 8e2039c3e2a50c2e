#!/usr/bin/env bash
# The nightly job: snapshot, verify, rotate, under one lock, failing loudly.
#
#   scripts/backup.sh SOURCE_URL
#
# Settings come from the environment (or the config file, DBSAFE_CONFIG):
#   DBSAFE_STORE            the store (required)
#   DBSAFE_ENV              environment name (default: default)
#   DBSAFE_RECIPIENTS_FILE  age recipients to encrypt to
#   DBSAFE_IDENTITY_FILE    age identity to verify with (needed when encrypting)
#   VERIFY_LEVEL            quick | full | restore (default: full)
#   PRUNE_ARGS              retention flags for dbprune, applied to this environment's
#                           backups of this database only (default: the environment's retention)
#   BIN_DIR                 where the dbsafe binaries are (default: PATH)
#
# Exit status: 0 when every step succeeded; otherwise the failing step's code
# (4 when another backup.sh of the same store and database is running).
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 SOURCE_URL" >&2
  exit 2
fi
source_url=$1
: "${DBSAFE_STORE:?set DBSAFE_STORE to the store}"
export DBSAFE_STORE
bin=${BIN_DIR:+$BIN_DIR/}
level=${VERIFY_LEVEL:-full}
read -r -a prune_args <<< "${PRUNE_ARGS:-}"

log() { printf '%s backup.sh: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

# One lock for the whole job: two cron runs never interleave snapshot and
# prune. A local store keeps it in STORE/locks; for a remote store it is this
# host's (nothing is written in the working directory, which may be / or
# read-only).
case $DBSAFE_STORE in
  *://*) lock_dir=${XDG_RUNTIME_DIR:-/tmp}/dbsafe-locks-$(id -u) ;;
  *) lock_dir=$DBSAFE_STORE/locks ;;
esac
(umask 077 && mkdir -p "$lock_dir")
lock="$lock_dir/backup.sh-$(printf '%s' "$DBSAFE_STORE $source_url" | sha256sum | cut -c1-16).lock"
exec 9>"$lock"
if ! flock -n 9; then
  log "another backup of $source_url is running (lock $lock)"
  exit 4
fi

log "snapshot of $source_url"
meta=$(mktemp)
trap 'rm -f "$meta"' EXIT
"${bin}dbsnap" "$source_url" --to "$DBSAFE_STORE" --json > "$meta"
# The report is pretty-printed JSON, a key a line; artifact, environment and
# database names hold no quotes.
field() { sed -n "s/^$1\"$2\": \"\\(.*\\)\",\$/\\1/p" "$meta" | head -n 1; }
name=$(field '    ' file)
env=$(field '    ' environment)
database=$(field '    ' database)
if [ -z "$name" ] || [ -z "$env" ] || [ -z "$database" ]; then
  log "cannot read the snapshot's report"
  exit 1
fi

log "verify $name at level $level"
"${bin}dbverify" --store "$DBSAFE_STORE" --level "$level" "$name"

log "rotate $env's backups of $database"
"${bin}dbprune" --store "$DBSAFE_STORE" --env "$env" --database "$database" "${prune_args[@]}"

log "done: $name"
