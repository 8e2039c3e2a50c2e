#!/usr/bin/env bash
# make bench: dbsafe against the tools and shell pipelines it replaces, on
# this machine, from one run. A benchmark, not a test: nothing here asserts.
#
#   BENCH_ROWS   rows of the PostgreSQL dataset (default 3500000, about 1 GB)
#   BENCH_SQLITE_MB  size of the SQLite database (default 1024)
#   BENCH_SEGMENTS   WAL segments pushed (default 16)
#   BENCH_PGBENCH_SCALE  pgbench scale of the second dataset (default 50)
#   BENCH_REPEAT rounds: the commands of each group run in turn, round after
#                round; each median is reported (default 3)
#   BENCH_DIR    where to work (default a new directory under /var/tmp)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# What the bench compares against: pgBackRest's archive-push, from Debian.
if ! command -v pgbackrest >/dev/null 2>&1; then
  echo "bench: installing pgbackrest (apt-get install pgbackrest)" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo_=(); else sudo_=(sudo); fi
  "${sudo_[@]}" apt-get install -y -qq pgbackrest >/dev/null
fi
bin=${DBSAFE_BIN_DIR:-$root/target/release}
rows=${BENCH_ROWS:-3500000}
sqlite_mb=${BENCH_SQLITE_MB:-1024}
segments=${BENCH_SEGMENTS:-16}
repeat=${BENCH_REPEAT:-3}
# shellcheck source-path=SCRIPTDIR source=bench-server.sh
. "$root/scripts/bench-server.sh"
bench_server "$bin" "${BENCH_DIR:-$(mktemp -d /var/tmp/dbsafe-bench.XXXXXX)}" \
  "synchronous_commit = off" "max_wal_size = 4GB" "shared_buffers = 256MB"
url="$server/bench"

echo "bench: building a PostgreSQL dataset of $rows rows (text, numbers, JSON, incompressible bytea)..." >&2
bench_events bench "$rows"
dbsize=$(psql_ -d bench -At -c "SELECT pg_database_size('bench')")
echo "bench: database size $((dbsize / 1048576)) MiB" >&2

age-keygen -o "$work/key.txt" 2>/dev/null
pub=$(age-keygen -y "$work/key.txt")
head -c 32 /dev/urandom | base64 > "$work/pass.txt"

results=()
group=()
floor=""
# measure NAME OUTFILE CMD: queues CMD in the current group; run_group runs
# the group and reports, for each, wall seconds, CPU, peak RSS of the whole
# pipeline (MiB) and the size of OUTFILE (MiB).
measure() {
  group+=("$1" "$2" "$3")
}

# run_group [FLOOR]: runs the group's commands in turn, $repeat rounds, so
# that a machine whose speed drifts during the bench weighs on each of them
# alike. Each is reported with the median of its runs, and its ratio: the
# median over the rounds of its time against the group's first command in
# the same round (the floor), or against FLOOR seconds when given.
run_group() {
  local fixed=${1:-} n=$(( ${#group[@]} / 3 )) r i kb user sys start end
  local -a secs=() cpus=() peaks=()
  for ((r = 0; r < repeat; r++)); do
    for ((i = 0; i < n; i++)); do
      sync
      start=$(date +%s.%N)
      # A command that fails stops the bench: a failed run is no figure.
      /usr/bin/time -f "%M %U %S" -o "$work/time.txt" bash -o pipefail -c "${group[3*i+2]}"
      end=$(date +%s.%N)
      read -r kb user sys < "$work/time.txt"
      secs[r*n+i]=$(python3 -c "print(f'{$end - $start:.2f}')")
      cpus[r*n+i]=$(python3 -c "print(f'{$user + $sys:.1f}')")
      if [ "$kb" -gt "${peaks[i]:-0}" ]; then peaks[i]=$kb; fi
    done
  done
  for ((i = 0; i < n; i++)); do
    local name=${group[3*i]} out=${group[3*i+1]} runs=() cpu_runs=() ratios=() base
    for ((r = 0; r < repeat; r++)); do
      runs+=("${secs[r*n+i]}")
      cpu_runs+=("${cpus[r*n+i]}")
      base=${fixed:-${secs[r*n]}}
      ratios+=("$(python3 -c "print(${secs[r*n+i]} / $base)")")
    done
    local med cpu ratio size="-" rss=$(( peaks[i] / 1024 ))
    med=$(median "${runs[@]}")
    cpu=$(median "${cpu_runs[@]}")
    ratio="$(median "${ratios[@]}")x"
    if [ -n "$out" ] && [ -f "$out" ]; then size=$(( $(stat -c %s "$out") / 1048576 )); fi
    if [ "$i" -eq 0 ] && [ -z "$fixed" ]; then floor=$med; fi
    last_secs=$med
    results+=("$(printf '%-58s %9s %8s %10s %11s %8s   [%s]' "$name" "$med" "$cpu" "$rss" "$size" "$ratio" "${runs[*]}")")
    printf '%s\n' "${results[-1]}" >&2
  done
  group=()
}

# median N...: the median of the numbers, two decimals.
median() {
  python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}')" "$@"
}

echo >&2
printf '%-58s %9s %8s %10s %11s %8s\n' "what" "seconds" "CPU s" "peakRSS MB" "artifact MB" "vs floor" >&2
measure "pg_dump -Fc -Z0 > /dev/null (the floor)" "" "pg_dump -Fc -Z0 -d '$url' > /dev/null"
# What compressing at all costs here: the zstd CLI at its fastest positive
# level behind the same dump (the bound of any pipeline whose artifact is
# smaller than the runbook's gzip one).
measure "pg_dump -Fc -Z0 | zstd -1 > /dev/null (compression's bound)" "" "pg_dump -Fc -Z0 -d '$url' | zstd -q -1 > /dev/null"
measure "dbsnap (defaults: zstd --level auto, age, sha256)" "$work/snap.pgdump.zst.age" "dbsnap '$url' -q -r '$pub' -o '$work/snap.pgdump.zst.age'"
measure "dbsnap --level 1" "$work/snap1.pgdump.zst.age" "dbsnap '$url' -q --level 1 -r '$pub' -o '$work/snap1.pgdump.zst.age'"
measure "dbsnap --threads 2" "$work/snapt.pgdump.zst.age" "dbsnap '$url' -q --threads 2 -r '$pub' -o '$work/snapt.pgdump.zst.age'"
measure "pg_dump -Fc -Z0 | zstd -3 | age | tee | sha256sum" "$work/shell.pgdump.zst.age" "pg_dump -Fc -Z0 -d '$url' | zstd -q -3 | age -r '$pub' | tee '$work/shell.pgdump.zst.age' | sha256sum > /dev/null"
measure "runbook: pg_dump | gzip | openssl enc | tee | sha256sum" "$work/runbook.sql.gz.enc" "pg_dump -d '$url' | gzip | openssl enc -aes-256-cbc -pbkdf2 -pass file:'$work/pass.txt' | tee '$work/runbook.sql.gz.enc' | sha256sum > /dev/null"
run_group
artifact_mb=$(( $(stat -c %s "$work/snap.pgdump.zst.age") / 1048576 ))
measure "dbverify --level full" "" "dbverify -q -i '$work/key.txt' '$work/snap.pgdump.zst.age'"
run_group "$floor"
verify_secs=$last_secs
pg_dump -Fc -Z0 -d "$url" > "$work/plain.pgdump"
# Where the pipeline's time goes: each stage alone on the same bytes.
measure "stage alone: zstd -3 of the dump file" "" "zstd -q -3 -c '$work/plain.pgdump' > /dev/null"
measure "stage alone: age of the compressed dump" "" "age -r '$pub' '$work/shell.pgdump.zst.age' > /dev/null"
measure "stage alone: sha256sum of the artifact" "" "sha256sum '$work/snap.pgdump.zst.age' > /dev/null"
measure "stage alone: dbverify --level quick (sha256 in dbsafe)" "" "dbverify -q --level quick '$work/snap.pgdump.zst.age'"
run_group "$floor"

echo >&2
scale=${BENCH_PGBENCH_SCALE:-50}
echo "bench: pgbench scale $scale" >&2
psql_ -d postgres -c "CREATE DATABASE pgb"
"$pgbin/pgbench" -q -i -s "$scale" -h "$work" -p "$port" -U postgres pgb >/dev/null 2>&1
pgb="${url%/bench}/pgb"
measure "pgbench: pg_dump -Fc -Z0 > /dev/null (the floor)" "" "pg_dump -Fc -Z0 -d '$pgb' > /dev/null"
measure "pgbench: pg_dump -Fc -Z0 | zstd -1 > /dev/null" "" "pg_dump -Fc -Z0 -d '$pgb' | zstd -q -1 > /dev/null"
measure "pgbench: dbsnap (defaults: zstd auto, age, sha256)" "$work/pgb.pgdump.zst.age" "dbsnap '$pgb' -q -r '$pub' -o '$work/pgb.pgdump.zst.age'"
measure "pgbench: runbook pipeline (gzip, openssl, tee, sha256sum)" "$work/pgb.sql.gz.enc" "pg_dump -d '$pgb' | gzip | openssl enc -aes-256-cbc -pbkdf2 -pass file:'$work/pass.txt' | tee '$work/pgb.sql.gz.enc' | sha256sum > /dev/null"
run_group

echo >&2
echo "bench: SQLite, ${sqlite_mb} MB" >&2
python3 - "$work/app.db" "$sqlite_mb" <<'PY'
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1]); mb = int(sys.argv[2])
c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, n REAL, blob BLOB)")
rows = mb * 1024 * 1024 // 600
batch = [(f"name {i} " * 20, i / 3.0, os.urandom(128)) for i in range(10000)]
for _ in range(rows // 10000):
    c.executemany("INSERT INTO t(name, n, blob) VALUES (?, ?, ?)", batch)
c.commit()
PY
measure "sqlite3 .backup (the floor)" "$work/copy.db" "sqlite3 '$work/app.db' \".backup '$work/copy.db'\""
measure "dbsnap sqlite (defaults: zstd auto, age)" "$work/app.sqlite.zst.age" "dbsnap sqlite:'$work/app.db' -q -r '$pub' --tmpdir '$work' -o '$work/app.sqlite.zst.age'"
measure "dbverify --level full (sqlite)" "" "dbverify -q -i '$work/key.txt' --tmpdir '$work' '$work/app.sqlite.zst.age'"
run_group

echo >&2
echo "bench: S3 upload to s3s-fs on loopback, ${sqlite_mb} MB" >&2
s3port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/s3/bench"
s3s-fs --host 127.0.0.1 --port "$s3port" --access-key benchkey --secret-key bench-secret-0123456789 "$work/s3" >/dev/null 2>&1 &
s3pid=$!
trap 'kill "$s3pid" 2>/dev/null || true; wait "$s3pid" 2>/dev/null || true; bench_server_cleanup' EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$s3port") 2>/dev/null && break; sleep 0.1; done
s3env="AWS_ENDPOINT_URL=http://127.0.0.1:$s3port AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=bench-secret-0123456789 AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true DBSAFE_S3_PATH_STYLE=1"
measure "aws s3 cp of the database file (the floor)" "" "env $s3env aws s3 cp --quiet '$work/app.db' s3://bench/cp/app.db"
for p in 2 4 8; do
  measure "dbsnap sqlite to S3, uncompressed, $p parts in flight" "" "env $s3env DBSAFE_S3_PARTS_IN_FLIGHT=$p dbsnap sqlite:'$work/app.db' -q --compress none --no-encrypt --to s3://bench/p$p"
done
run_group
kill "$s3pid" 2>/dev/null || true
wait "$s3pid" 2>/dev/null || true

echo >&2
echo "bench: WAL, $segments segments of 16 MiB" >&2
psql_ -d bench -c "ALTER SYSTEM SET wal_level = replica" >/dev/null
mkdir -p "$work/segs"
# Real WAL: the segments the dataset load wrote.
# The list is read whole before the first few are taken, so no writer of the
# pipeline dies of SIGPIPE (pipefail would end the bench with 141).
mapfile -t all_segments < <(find "$data/pg_wal" -maxdepth 1 -regextype posix-extended -regex '.*/[0-9A-F]{24}' | sort)
for f in "${all_segments[@]:0:$segments}"; do cp "$f" "$work/segs/"; done
n=$(find "$work/segs" -type f | wc -l)
mkdir -p "$work/walstore" "$work/walstore-async" "$work/spool" "$work/run-pg" "$work/pgbr/repo" "$work/pgbr/log" "$work/pgbr/spool"
cat > "$work/pgbr/pgbackrest.conf" <<CONF
[global]
repo1-path=$work/pgbr/repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=$(cat "$work/pass.txt")
compress-type=zst
compress-level=3
log-path=$work/pgbr/log
spool-path=$work/pgbr/spool
lock-path=$work/pgbr/lock

[bench]
pg1-path=$data
pg1-socket-path=$work
pg1-port=$port
pg1-user=postgres
CONF
# Both run as archive_command runs them: as the server's user.
if [ "$(id -u)" -eq 0 ]; then
  chown -R postgres: "$work/pgbr" "$work/segs" "$work/walstore" "$work/walstore-async" "$work/spool" "$work/run-pg"
fi
"${as_pg[@]}" pgbackrest --config="$work/pgbr/pgbackrest.conf" --stanza=bench stanza-create >/dev/null
# Segment by segment, walship then pgBackRest, so that the disk's state
# (write-back of what the bench wrote before) weighs on both alike, then the
# zstd CLI alone at walship's level (what compressing costs at all). All run
# as archive_command runs them: from a shell of the server's user (one
# runuser for the whole loop, not one a push, which would add its own start
# to each).
as_server=("${as_pg[@]}" env "PATH=$PATH" "XDG_RUNTIME_DIR=$work/run-pg")
# shellcheck disable=SC2016 # expanded by the server user's shell
times=$("${as_server[@]}" bash -c '
  set -euo pipefail
  store=$1 pub=$2 conf=$3
  shift 3
  w=0 p=0 z=0
  for f in "$@"; do
    t0=$(date +%s%N)
    walship push "$f" "$(basename "$f")" --to "$store" -r "$pub"
    t1=$(date +%s%N)
    pgbackrest --config="$conf" --stanza=bench archive-push "$f" >/dev/null
    t2=$(date +%s%N)
    zstd -q -1 -T1 -c "$f" >/dev/null
    t3=$(date +%s%N)
    w=$((w + t1 - t0)) p=$((p + t2 - t1)) z=$((z + t3 - t2))
  done
  echo "$((w / 1000))e-6 $((p / 1000))e-6 $((z / 1000))e-6"
' walship-bench "$work/walstore" "$pub" "$work/pgbr/pgbackrest.conf" "$work/segs"/*)
read -r walship_s pgbr_s zstd_s <<< "$times"
walship_ms=$(python3 -c "print(f'{$walship_s * 1000 / $n:.0f}')")
pgbr_ms=$(python3 -c "print(f'{$pgbr_s * 1000 / $n:.0f}')")
zstd_ms=$(python3 -c "print(f'{$zstd_s * 1000 / $n:.0f}')")
echo "walship push (zstd, age, fsync): $walship_ms ms/segment" >&2
echo "pgbackrest archive-push (zst, aes-256-cbc): $pgbr_ms ms/segment" >&2
echo "zstd -1 of the segment alone, to /dev/null: $zstd_ms ms/segment" >&2
# --async: acknowledged once durable in the spool; the shipper works behind.
# shellcheck disable=SC2016 # expanded by the server user's shell
async_s=$("${as_server[@]}" bash -c '
  set -euo pipefail
  spool=$1 store=$2 pub=$3
  shift 3
  t0=$(date +%s%N)
  for f in "$@"; do
    walship push "$f" "$(basename "$f")" --async --spool "$spool" --to "$store" -r "$pub"
  done
  echo "$((($(date +%s%N) - t0) / 1000))e-6"
' walship-bench "$work/spool" "$work/walstore-async" "$pub" "$work/segs"/*)
async_ms=$(python3 -c "print(f'{$async_s * 1000 / $n:.0f}')")
while [ -n "$(ls -A "$work/spool/queue")" ]; do sleep 0.2; done
echo "walship push --async (acknowledged from the spool): $async_ms ms/segment" >&2

cat <<REPORT

dbsafe bench on $(nproc) cores: PostgreSQL database $((dbsize / 1048576)) MiB ($rows rows), SQLite ${sqlite_mb} MB, $n WAL segments
$(printf '%-58s %9s %8s %10s %11s %8s' "what" "seconds" "CPU s" "peakRSS MB" "artifact MB" "vs floor")
(CPU s: user + system time of every process of the command, the database server's excluded;
 vs floor: the median over the rounds of each run against the floor's run of the same round)
$(printf '%s\n' "${results[@]}")
dbverify --level full throughput: $(python3 -c "print(f'{$dbsize / 1048576 / $verify_secs:.0f}')") MiB/s of database ($artifact_mb MiB artifact)
walship push: $walship_ms ms/segment, --async: $async_ms ms/segment; pgbackrest archive-push: $pgbr_ms ms/segment; zstd -1 alone: $zstd_ms ms/segment
REPORT
