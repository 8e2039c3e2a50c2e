#!/usr/bin/env bash
# Turns on WAL archiving with walship for a PostgreSQL server.
#
#   scripts/postgres-wal-config.sh DATABASE_URL STORE [ARCHIVE_TIMEOUT]
#
# Sets, with ALTER SYSTEM (as a superuser):
#   wal_level = replica            enough WAL for base backups and point-in-time recovery
#   archive_mode = on              needs a server restart, which this script does not do
#   archive_command = 'walship push %p %f --to STORE'
#   archive_timeout = ARCHIVE_TIMEOUT (default 60s)
#
# The RPO: a busy server archives each 16 MiB segment as soon as it fills; a
# quiet one switches segments every ARCHIVE_TIMEOUT, so at most that much
# committed work (60s by default, well inside a 15-minute RPO) exists only
# on the server. Encryption and compression come from the environment at
# configuration time and are written into archive_command:
#   DBSAFE_RECIPIENTS_FILE  age recipients file (read by walship at each push)
#   DBSAFE_NO_ENCRYPT=1     archive plain WAL instead (walship push --no-encrypt);
#                           one of the two is required
#   DBSAFE_COMPRESS         zstd (default), gzip or none
#   DBSAFE_METRICS_FILE     textfile the pushes record their metrics in (what the
#                           WAL alerts of monitoring/alerts.yml read); recommended
#   DBSAFE_ENV              the environment the metrics name (default: default)
#   WALSHIP                 path of the walship binary (default: walship on PATH)
# The server runs archive_command as its own user: that user must be able to
# write STORE and the metrics file, and read the recipients file.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 DATABASE_URL STORE [ARCHIVE_TIMEOUT]" >&2
  exit 2
fi
url=$1
store=$2
timeout=${3:-60s}
walship=${WALSHIP:-$(command -v walship || true)}
if [ -z "$walship" ]; then
  echo "$0: walship is not on PATH; set WALSHIP=/path/to/walship" >&2
  exit 2
fi

quote() { printf "%s" "$1" | sed "s/'/'\\\\''/g"; }
env_prefix="DBSAFE_CONFIG=/dev/null"
if [ -n "${DBSAFE_RECIPIENTS_FILE:-}" ]; then
  env_prefix="$env_prefix DBSAFE_RECIPIENTS_FILE='$(quote "$DBSAFE_RECIPIENTS_FILE")'"
fi
plain=""
if [ -z "${DBSAFE_RECIPIENTS_FILE:-}" ]; then
  if [ "${DBSAFE_NO_ENCRYPT:-}" != 1 ]; then
    echo "$0: no DBSAFE_RECIPIENTS_FILE: WAL would be archived unencrypted; set it, or DBSAFE_NO_ENCRYPT=1 to archive plain WAL" >&2
    exit 2
  fi
  plain=" --no-encrypt"
fi
if [ -n "${DBSAFE_COMPRESS:-}" ]; then
  env_prefix="$env_prefix DBSAFE_COMPRESS=$DBSAFE_COMPRESS"
fi
if [ -n "${DBSAFE_METRICS_FILE:-}" ]; then
  env_prefix="$env_prefix DBSAFE_METRICS_FILE='$(quote "$DBSAFE_METRICS_FILE")'"
else
  echo "$0: no DBSAFE_METRICS_FILE: the pushes record no metrics, and the WAL alerts cannot fire" >&2
fi
if [ -n "${DBSAFE_ENV:-}" ]; then
  env_prefix="$env_prefix DBSAFE_ENV='$(quote "$DBSAFE_ENV")'"
fi
command="$env_prefix '$(quote "$walship")' push %p %f --to '$(quote "$store")'$plain"
# In SQL, single quotes double.
sql_command=${command//\'/\'\'}

psql -X -q -v ON_ERROR_STOP=1 -d "$url" <<SQL
ALTER SYSTEM SET wal_level = 'replica';
ALTER SYSTEM SET archive_mode = 'on';
ALTER SYSTEM SET archive_command = '$sql_command';
ALTER SYSTEM SET archive_timeout = '$timeout';
SELECT pg_reload_conf();
SQL
echo "archiving configured: archive_command = $command"
echo "restart the server for archive_mode to take effect"
