#!/usr/bin/env bash
# make bench-pitr: a point-in-time recovery drill with dbsafe against the
# same recovery done by hand. One server archives every WAL segment twice:
# with walship (zstd, age) into a store, and with cp into a directory. Its
# base backup is taken twice: dbsnap --base into the store, pg_basebackup
# into a directory. Then WAL is written, a target time noted, and the
# server recovered to it:
#   dbsafe:  dbrestore --store S --target-time T --pgdata D --start
#   by hand: copy the pg_basebackup directory, restore_command 'cp ...',
#            recovery_target_time, pg_ctl start, wait for promotion
# A benchmark, not a test: nothing here asserts.
#
#   BENCH_PITR_SCALE    pgbench scale of the base (default 70, about 1 GB)
#   BENCH_PITR_UPDATES  rows updated to write WAL (default 5000000, about 1 GB of WAL)
#   BENCH_DIR           where to work (default a new directory under /var/tmp)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${DBSAFE_BIN_DIR:-$root/target/release}
scale=${BENCH_PITR_SCALE:-70}
updates=${BENCH_PITR_UPDATES:-5000000}
# shellcheck source-path=SCRIPTDIR source=bench-server.sh
. "$root/scripts/bench-server.sh"
bench_server "$bin" "${BENCH_DIR:-$(mktemp -d /var/tmp/dbsafe-bench-pitr.XXXXXX)}" \
  "wal_level = replica" "archive_mode = on" "max_wal_size = 4GB" "archive_timeout = 0"

store=$work/store
manual=$work/manual-wal
mkdir -p "$store" "$manual"
age-keygen -o "$work/key.txt" 2>/dev/null
age-keygen -y "$work/key.txt" > "$work/recipients.txt"
chmod 644 "$work/key.txt" "$work/recipients.txt"
[ ${#as_pg[@]} -gt 0 ] && chown -R postgres: "$store" "$manual" "$work/key.txt"
archive="DBSAFE_CONFIG=/dev/null DBSAFE_RECIPIENTS_FILE=$work/recipients.txt $bin/walship push %p %f --to $store && cp %p $manual/%f"
psql_ -d postgres -c "ALTER SYSTEM SET archive_command = '$archive'"
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$data" -l "$work/pg.log" -w restart >/dev/null

echo "bench-pitr: pgbench scale $scale..." >&2
"$pgbin/pgbench" -q -i -s "$scale" -h "$work" -p "$port" -U postgres postgres >/dev/null 2>&1
size=$(psql_ -d postgres -At -c "SELECT pg_size_pretty(pg_database_size('postgres'))")

echo "bench-pitr: base backups ($size)..." >&2
dbsnap -q --base "$server/postgres" --to "$store" --recipients-file "$work/recipients.txt"
"${as_pg[@]}" "$pgbin/pg_basebackup" -h "$work" -p "$port" -U postgres -D "$work/manual-base" -X none -c fast

echo "bench-pitr: writing WAL ($updates rows updated)..." >&2
lsn0=$(psql_ -d postgres -At -c "SELECT pg_current_wal_lsn()")
psql_ -d postgres -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= $updates"
sleep 1.1
target=$(psql_ -d postgres -At -c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
expected=$(psql_ -d postgres -At -c "SELECT sum(abalance) FROM pgbench_accounts")
sleep 1.1
psql_ -d postgres -c "UPDATE pgbench_accounts SET abalance = 0 WHERE aid <= 1000"
wal=$(psql_ -d postgres -At -c "SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0'))")
last=$(psql_ -d postgres -At -c "SELECT pg_walfile_name(pg_switch_wal())")
until [ "$(psql_ -d postgres -At -c "SELECT coalesce(last_archived_wal, '') >= '$last' FROM pg_stat_archiver")" = t ]; do
  sleep 0.5
done

sum_on() { "$pgbin/psql" -X -q -At -h "$1" -p "$2" -U postgres -d postgres -c "SELECT sum(abalance) FROM pgbench_accounts"; }
stop() { "${as_pg[@]}" "$pgbin/pg_ctl" -D "$1" -m immediate stop >/dev/null 2>&1 || true; }

port_a=$((port + 1))
dbsafe_recovery() {
  dbrestore -q --store "$store" -i "$work/key.txt" --target-time "$target" \
    --pgdata "$work/pitr-dbsafe" --start --port "$port_a" >/dev/null
}
echo "bench-pitr: dbrestore to $target..." >&2
a=$(bench_seconds dbsafe_recovery)
got_a=$(sum_on "$work/pitr-dbsafe" "$port_a")
stop "$work/pitr-dbsafe"

port_b=$((port + 2))
manual_recovery() {
  local d=$work/pitr-manual
  cp -a "$work/manual-base" "$d"
  {
    echo "port = $port_b"
    echo "unix_socket_directories = '$d'"
    echo "archive_mode = off"
    echo "restore_command = 'cp $manual/%f %p'"
    echo "recovery_target_time = '$target+00'"
    echo "recovery_target_action = 'promote'"
  } >> "$d/postgresql.auto.conf"
  touch "$d/recovery.signal"
  [ ${#as_pg[@]} -gt 0 ] && chown -R postgres: "$d"
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$d" -l "$work/manual.log" -w -t 3600 start >/dev/null
  until [ "$("$pgbin/psql" -X -q -At -h "$d" -p "$port_b" -U postgres -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do
    sleep 0.2
  done
}
echo "bench-pitr: the same recovery by hand..." >&2
b=$(bench_seconds manual_recovery)
got_b=$(sum_on "$work/pitr-manual" "$port_b")
stop "$work/pitr-manual"

cat <<REPORT

dbsafe PITR bench on $(nproc) cores: base $size (pgbench scale $scale), $wal of WAL to replay
(sum of balances at the target: expected $expected, dbsafe $got_a, by hand $got_b)
dbrestore --target-time (age + zstd WAL from the store, verify, recover, promote):  $a s
pg_basebackup copy + cp restore_command (plain files, recover, promote):        $b s
ratio: $(python3 -c "print(f'{$a / $b:.2f}x')")
REPORT
