#!/usr/bin/env bash
# make bench-restore: restore time of dbrestore (owners, roles and database
# properties kept, --create) against pg_restore of the same dump
# uncompressed, on two datasets: pgbench's tables and the wide-row events
# table of make bench. The median of several runs; the order of the
# commands rotates from run to run and a checkpoint precedes each, so none
# pays for another's WAL. A benchmark, not a test: nothing here asserts.
#
#   BENCH_PGBENCH_SCALE  pgbench scale (default 30, about 450 MB)
#   BENCH_ROWS           rows of the events table (default 1500000, about 500 MB)
#   BENCH_RUNS           runs (default 3)
#   BENCH_DIR            where to work (default a new directory under /var/tmp)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${DBSAFE_BIN_DIR:-$root/target/release}
scale=${BENCH_PGBENCH_SCALE:-30}
rows=${BENCH_ROWS:-1500000}
runs=${BENCH_RUNS:-3}
# shellcheck source-path=SCRIPTDIR source=bench-server.sh
. "$root/scripts/bench-server.sh"
bench_server "$bin" "${BENCH_DIR:-$(mktemp -d /var/tmp/dbsafe-bench-restore.XXXXXX)}" "max_wal_size = 2GB"
age-keygen -o "$work/key.txt" 2>/dev/null

psql_ -d postgres -At -c "CREATE DATABASE pgbench"
"$pgbin/pgbench" -q -i -s "$scale" -h "$work" -p "$port" -U postgres pgbench >/dev/null 2>&1
bench_events events "$rows" >/dev/null

median() {
  local -a v
  read -ra v <<< "$1"
  python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}')" "${v[@]}"
}

variants=(pg_restore pg_restore_j2 dbrestore jobs2 skip)
declare -A label=(
  [pg_restore]="pg_restore --single-transaction (uncompressed dump)"
  [pg_restore_j2]="pg_restore -j 2 (uncompressed dump)"
  [dbrestore]="dbrestore --create (defaults: verified while read)"
  [jobs2]="dbrestore --create --jobs 2 (decoded once, verified, -j 2)"
  [skip]="dbrestore --create --skip-verify"
)

# bench_dataset DB: the table of the five restores of DB.
bench_dataset() {
  local db=$1
  local size
  size=$(psql_ -d postgres -At -c "SELECT pg_size_pretty(pg_database_size('$db'))")
  pg_dump -Fc -Z0 -d "$server/$db" -f "$work/plain.pgdump"
  dbsnap -q "$server/$db" -r "$(age-keygen -y "$work/key.txt")" -o "$work/snap.pgdump.zst.age"
  declare -A times=()
  local i what s k
  for i in $(seq 1 "$runs"); do
    local order=("${variants[@]}")
    k=$(( (i - 1) % ${#variants[@]} ))
    order=("${order[@]:$k}" "${order[@]:0:$k}")
    for what in "${order[@]}"; do
      psql_ -d postgres -At -c "CHECKPOINT"
      case $what in
        pg_restore|pg_restore_j2)
          psql_ -d postgres -At -c "CREATE DATABASE r_$what"
          local j=(--single-transaction)
          [ "$what" = pg_restore_j2 ] && j=(-j 2)
          s=$(bench_seconds pg_restore "${j[@]}" -d "$server/r_$what" "$work/plain.pgdump") ;;
        dbrestore)
          s=$(bench_seconds dbrestore -q -i "$work/key.txt" "$work/snap.pgdump.zst.age" --create --tmpdir "$work" --target "$server/r_$what") ;;
        jobs2)
          s=$(bench_seconds dbrestore -q --jobs 2 -i "$work/key.txt" "$work/snap.pgdump.zst.age" --create --tmpdir "$work" --target "$server/r_$what") ;;
        skip)
          s=$(bench_seconds dbrestore -q --skip-verify -i "$work/key.txt" "$work/snap.pgdump.zst.age" --create --tmpdir "$work" --target "$server/r_$what") ;;
      esac
      times[$what]+="$s "
      psql_ -d postgres -At -c "DROP DATABASE r_$what"
    done
  done
  local p
  p=$(median "${times[pg_restore]}")
  echo
  echo "$db ($size), median of $runs runs (seconds, and against pg_restore --single-transaction)"
  for what in "${variants[@]}"; do
    local m
    m=$(median "${times[$what]}")
    printf '%-58s %7s %7s   [%s]\n' "${label[$what]}" "$m" "$(python3 -c "print(f'{$m / $p:.2f}x')")" "${times[$what]% }"
  done
}

echo
echo "dbsafe restore bench on $(nproc) cores"
bench_dataset pgbench
bench_dataset events
