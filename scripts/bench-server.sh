# shellcheck shell=bash
# Sourced by the bench scripts: a throwaway PostgreSQL server in a work
# directory, stopped and removed on exit.
#
#   bench_server BIN WORK [SETTING...]   initdb and start it in WORK (created);
#                                        BIN holds dbsafe's binaries; each
#                                        SETTING is a postgresql.conf line
# Sets: pgbin, as_pg (runuser as postgres when root), port, data, server
# (postgres://postgres@... without a database), and PATH (dbsafe's BIN, then
# PostgreSQL's); psql_ runs psql against it.
#
#   bench_events DB ROWS   creates DB with the wide-row events table (text,
#                          numbers, JSON, incompressible bytea; about 330
#                          bytes a row) and its two indexes

bench_server() {
  local bin=$1
  work=$2
  shift 2
  pgbin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -1)
  mkdir -p "$work"
  chmod 755 "$work"
  export DBSAFE_CONFIG=/dev/null PATH="$bin:$pgbin:$PATH"
  as_pg=()
  if [ "$(id -u)" -eq 0 ]; then as_pg=(runuser -u postgres --); chown postgres: "$work"; fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  data=$work/pgdata
  trap bench_server_cleanup EXIT
  "${as_pg[@]}" "$pgbin/initdb" -D "$data" -U postgres -A trust --no-sync >/dev/null
  {
    echo "listen_addresses = ''"
    echo "unix_socket_directories = '$work'"
    echo "port = $port"
    echo "fsync = off"
    printf '%s\n' "$@"
  } >> "$data/postgresql.conf"
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$data" -l "$work/pg.log" -w start >/dev/null
  # shellcheck disable=SC2034 # for the script that sources this
  server="postgres://postgres@$(python3 -c 'import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=""))' "$work"):$port"
}

bench_server_cleanup() {
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
  # A process the bench started may still be ending (a shipper, a server):
  # what it writes meanwhile makes one rm fail.
  local _
  for _ in 1 2 3 4 5; do rm -rf "$work" 2>/dev/null && return 0; sleep 1; done
  echo "bench: could not remove $work" >&2
}

# bench_seconds CMD...: the wall seconds CMD took, on stdout. A command
# that fails stops the bench with its stderr: a failed run is no figure.
bench_seconds() {
  local start
  start=$(date +%s.%N)
  if ! "$@" >/dev/null 2>"$work/bench-command.err"; then
    echo "bench: $* failed:" >&2
    cat "$work/bench-command.err" >&2
    return 1
  fi
  python3 -c "print(f'{$(date +%s.%N) - $start:.2f}')"
}

psql_() { "$pgbin/psql" -X -q -h "$work" -p "$port" -U postgres "$@"; }

bench_events() {
  psql_ -d postgres -c "CREATE DATABASE $1"
  psql_ -d "$1" <<SQL
CREATE TABLE events(
  id bigserial PRIMARY KEY, at timestamptz NOT NULL, kind text NOT NULL, amount numeric(12,2),
  attrs jsonb, note text, blob bytea);
INSERT INTO events(at, kind, amount, attrs, note, blob)
SELECT '2025-01-01'::timestamptz + i * interval '1 second',
       (ARRAY['order','refund','login','logout','transfer'])[1 + i % 5],
       (i % 100000) / 7.0,
       jsonb_build_object('user', 'user' || (i % 5000), 'region', (ARRAY['eu','us','ap'])[1 + i % 3],
                          'tags', jsonb_build_array('a' || (i % 17), 'b' || (i % 29)), 'score', i % 1000),
       'customer note ' || (i % 1000) || ' lorem ipsum dolor sit amet, consectetur adipiscing elit',
       decode(md5(i::text) || md5((i * 7)::text) || md5((i * 13)::text), 'hex')
FROM generate_series(1, $2) i;
CREATE INDEX events_at ON events(at);
VACUUM ANALYZE events;
SQL
}
