#!/usr/bin/env bash
# The main job on the embedded default, SQLite: a sample database, an
# encrypted backup into a local store, verification at every level,
# rotation, store health, a restore over the live database (with its safety
# backup), and the audit trail. Everything happens under ./demo-out.
set -euo pipefail

bin=${DBSAFE_BIN_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
out=${DEMO_DIR:-demo-out}
rm -rf "$out"
mkdir -p "$out"
cd "$out"
export PATH="$bin:$PATH"
export DBSAFE_CONFIG=/dev/null

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. A sample SQLite database (app.db)"
python3 - <<'PY'
import sqlite3, random
c = sqlite3.connect("app.db")
c.executescript("""
CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT, email TEXT);
CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), total REAL);
""")
c.executemany("INSERT INTO customers(name, email) VALUES (?, ?)",
              [(f"Customer {i}", f"c{i}@example.com") for i in range(5000)])
c.executemany("INSERT INTO orders(customer_id, total) VALUES (?, ?)",
              [(random.randint(1, 5000), round(random.random() * 500, 2)) for _ in range(20000)])
c.commit()
PY
ls -l app.db

step "2. Keys: an age identity if age-keygen is installed, else a passphrase file"
if command -v age-keygen >/dev/null 2>&1; then
  age-keygen -o key.txt 2>/dev/null
  export DBSAFE_RECIPIENTS; DBSAFE_RECIPIENTS=$(age-keygen -y key.txt)
  export DBSAFE_IDENTITY_FILE=$PWD/key.txt
  echo "encrypting to $DBSAFE_RECIPIENTS"
else
  umask 077; head -c 24 /dev/urandom | base64 > passphrase.txt
  export DBSAFE_PASSPHRASE_FILE=$PWD/passphrase.txt
  echo "encrypting with the passphrase in passphrase.txt (install age for key pairs)"
fi
export DBSAFE_STORE=$PWD/store

step "3. Back up, encrypted, into the store"
dbsnap sqlite:app.db --env demo --label reason=demo
ls -l store/backups

step "4. Anyone can check the checksums with coreutils"
(cd store/backups && sha256sum -c ./*.sha256)

step "5. Verify at every level"
dbverify --store "$DBSAFE_STORE" --latest --level quick
dbverify --store "$DBSAFE_STORE" --latest --level full
dbverify --store "$DBSAFE_STORE" --latest --level restore -v

step "6. Three more backups, then rotate: keep the newest two (the verified one is protected)"
for _ in 1 2 3; do sleep 1; dbsnap sqlite:app.db --env demo -q; done
dbprune --store "$DBSAFE_STORE" --keep-last 2 -v
dbverify --status --store "$DBSAFE_STORE"

step "7. Disaster: someone deletes most orders"
python3 -c 'import sqlite3; c=sqlite3.connect("app.db"); c.execute("DELETE FROM orders WHERE id > 100"); c.commit()'
python3 -c 'import sqlite3; c=sqlite3.connect("app.db"); print("orders now:", c.execute("SELECT count(*) FROM orders").fetchone()[0])'

step "8. Restore the latest backup over the live database (safety backup first)"
dbrestore --latest --env demo --target sqlite:app.db --yes
python3 -c 'import sqlite3; c=sqlite3.connect("app.db"); print("orders after restore:", c.execute("SELECT count(*) FROM orders").fetchone()[0])'

step "9. What the store holds, and the audit trail"
ls -l store/backups
cat store/audit.log

printf '\nDone: everything is in %s\n' "$PWD"
