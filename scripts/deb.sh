#!/usr/bin/env bash
# make deb: a Debian package of dbsafe's binaries, man pages, completions,
# scripts, systemd units (with /usr paths), sysusers entry and an example
# configuration, staged by `make install PREFIX=/usr` and built by dpkg-deb.
#
#   DBSAFE_BIN_DIR  the binaries to package (default target/release)
#   DEB_OUT         the directory the .deb goes to (default target/deb)
#   DEB_COMPRESS    dpkg-deb's compression (default xz; none for a quick test build)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${DBSAFE_BIN_DIR:-$root/target/release}
out=${DEB_OUT:-$root/target/deb}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d "${TMPDIR:-/tmp}/dbsafe-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"

make -s -C "$root" install DESTDIR="$stage" PREFIX=/usr BIN_DIR="$bin" >/dev/null
# Binaries ship without their symbol tables, as Debian's do.
strip --strip-unneeded "$stage"/usr/bin/*
install -d -m 0755 "$stage/etc/dbsafe" "$stage/DEBIAN" "$stage/usr/share/doc/dbsafe"
install -m 0644 "$root/scripts/dbsafe.toml.example" "$stage/etc/dbsafe/dbsafe.toml.example"
install -m 0644 "$root/README.md" "$stage/usr/share/doc/dbsafe/README.md"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: dbsafe
Version: $version
Architecture: $arch
Maintainer: dbsafe maintainers <dbsafe@example.invalid>
Installed-Size: $size
Depends: libc6
Recommends: age, zstd, postgresql-client
Suggests: mariadb-client, sqlite3, prometheus-node-exporter
Section: admin
Priority: optional
Homepage: https://example.invalid/dbsafe
Description: backups of production databases that are verified, restorable and safe
 Six tools chained by scripts, cron and systemd: dbsnap takes a snapshot,
 dbverify proves it restores, dbrestore restores it (PostgreSQL to any point
 in time), dbprune rotates, walship ships PostgreSQL WAL and dbpromote
 promotes a release between environments. PostgreSQL, MySQL/MariaDB, SQLite,
 DuckDB and directory trees; local and S3-compatible stores.
CONTROL
echo "/etc/dbsafe/dbsafe.toml.example" > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers dbsafe.conf || true
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
  fi
fi
POSTINST
cat > "$stage/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
POSTRM
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/postrm"
mkdir -p "$out"
deb="$out/dbsafe_${version}_${arch}.deb"
dpkg-deb --root-owner-group "-Z${DEB_COMPRESS:-xz}" --build "$stage" "$deb" >/dev/null
echo "$deb"
