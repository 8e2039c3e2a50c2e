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
# shellcheck source-path=SCRIPTDIR source=bench-server.sh
. "$root/scripts/bench-server.sh"
bench_server "$bin" "${BENCH_DIR:-$(mktemp -d /var/tmp/dbsafe-bench-restore.XXXXXX)}" "max_wal_size = 2GB"

psql_ -d postgres -At -c "CREATE DATABASE bench"
"$pgbin/pgbench" -q -i -s "$scale" -h "$work" -p "$port" -U postgres bench >/dev/null 2>&1
size=$(psql_ -d postgres -At -c "SELECT pg_size_pretty(pg_database_size('bench'))")
pg_dump -Fc -Z0 -d "$server/bench" -f "$work/plain.pgdump"
age-keygen -o "$work/key.txt" 2>/dev/null
dbsnap -q "$server/bench" -r "$(age-keygen -y "$work/key.txt")" -o "$work/snap.pgdump.zst.age"

declare -A times=([pg_restore]="" [dbrestore]="" [skip]="")
for i in $(seq 1 "$runs"); do
  order=(pg_restore dbrestore skip)
  k=$(( (i - 1) % 3 ))
  order=("${order[@]:$k}" "${order[@]:0:$k}")
  for what in "${order[@]}"; do
    psql_ -d postgres -At -c "CHECKPOINT"
    case $what in
      pg_restore)
        psql_ -d postgres -At -c "CREATE DATABASE p$i"
        s=$(bench_seconds pg_restore --single-transaction -d "$server/p$i" "$work/plain.pgdump") ;;
      dbrestore)
        s=$(bench_seconds dbrestore -q -i "$work/key.txt" "$work/snap.pgdump.zst.age" --create --target "$server/d$i") ;;
      skip)
        s=$(bench_seconds dbrestore -q --skip-verify -i "$work/key.txt" "$work/snap.pgdump.zst.age" --create --target "$server/s$i") ;;
    esac
    times[$what]+="$s "
  done
  psql_ -d postgres -At -c "DROP DATABASE p$i" -c "DROP DATABASE d$i" -c "DROP DATABASE s$i"
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
