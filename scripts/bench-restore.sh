#!/usr/bin/env bash
# make bench-restore: restore time of dbrestore (verify first, and with
# --skip-verify; owners, roles and database properties kept, --create)
# against pg_restore --single-transaction of the same dump uncompressed,
# the median of several runs. The order of the three rotates from run to
# run and a checkpoint precedes each, so none pays for another's WAL.
# A benchmark, not a test: nothing here asserts.
#
#   BENCH_PGBENCH_SCALE  pgbench scale of the dataset (default 30, about 450 MB)
#   BENCH_RUNS           runs (default 5)
#   BENCH_DIR            where to work (default a new directory under /var/tmp)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${DBSAFE_BIN_DIR:-$root/target/release}
scale=${BENCH_PGBENCH_SCALE:-30}
runs=${BENCH_RUNS:-5}
pgbin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=${BENCH_DIR:-$(mktemp -d /var/tmp/dbsafe-bench-restore.XXXXXX)}
mkdir -p "$work"
chmod 755 "$work"
export DBSAFE_CONFIG=/dev/null PATH="$bin:$pgbin:$PATH"

as_pg=()
if [ "$(id -u)" -eq 0 ]; then as_pg=(runuser -u postgres --); chown postgres: "$work"; fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data=$work/pgdata
cleanup() {
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

"${as_pg[@]}" "$pgbin/initdb" -D "$data" -U postgres -A trust --no-sync >/dev/null
cat >> "$data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$work'
port = $port
fsync = off
max_wal_size = 2GB
CONF
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$data" -l "$work/pg.log" -w start >/dev/null
server="postgres://postgres@$(python3 -c 'import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=""))' "$work"):$port"
psql_() { "$pgbin/psql" -X -q -At -h "$work" -p "$port" -U postgres -d postgres "$@"; }

psql_ -c "CREATE DATABASE bench"
"$pgbin/pgbench" -q -i -s "$scale" -h "$work" -p "$port" -U postgres bench >/dev/null 2>&1
size=$(psql_ -c "SELECT pg_size_pretty(pg_database_size('bench'))")
pg_dump -Fc -Z0 -d "$server/bench" -f "$work/plain.pgdump"
age-keygen -o "$work/key.txt" 2>/dev/null
dbsnap -q "$server/bench" -r "$(age-keygen -y "$work/key.txt")" -o "$work/snap.pgdump.zst.age"

seconds() {
  local start; start=$(date +%s.%N)
  "$@" >/dev/null 2>&1
  python3 -c "print(f'{$(date +%s.%N) - $start:.2f}')"
}
declare -A times=([pg_restore]="" [dbrestore]="" [skip]="")
for i in $(seq 1 "$runs"); do
  order=(pg_restore dbrestore skip)
  k=$(( (i - 1) % 3 ))
  order=("${order[@]:$k}" "${order[@]:0:$k}")
  for what in "${order[@]}"; do
    psql_ -c "CHECKPOINT"
    case $what in
      pg_restore)
        psql_ -c "CREATE DATABASE p$i"
        s=$(seconds pg_restore --single-transaction -d "$server/p$i" "$work/plain.pgdump") ;;
      dbrestore)
        s=$(seconds dbrestore -q -i "$work/key.txt" "$work/snap.pgdump.zst.age" --create --target "$server/d$i") ;;
      skip)
        s=$(seconds dbrestore -q --skip-verify -i "$work/key.txt" "$work/snap.pgdump.zst.age" --create --target "$server/s$i") ;;
    esac
    times[$what]+="$s "
  done
  psql_ -c "DROP DATABASE p$i" -c "DROP DATABASE d$i" -c "DROP DATABASE s$i"
done

median() {
  local -a v
  read -ra v <<< "$1"
  python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}')" "${v[@]}"
}
p=$(median "${times[pg_restore]}")
d=$(median "${times[dbrestore]}")
s=$(median "${times[skip]}")
cat <<REPORT

dbsafe restore bench on $(nproc) cores: pgbench scale $scale ($size), median of $runs runs (seconds)
pg_restore --single-transaction (uncompressed dump):  $p   [${times[pg_restore]% }]
dbrestore --create (verify first):                    $d   [${times[dbrestore]% }]  $(python3 -c "print(f'{$d / $p:.2f}x')")
dbrestore --create --skip-verify:                     $s   [${times[skip]% }]  $(python3 -c "print(f'{$s / $p:.2f}x')")
REPORT
