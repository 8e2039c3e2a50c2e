#!/usr/bin/env bash
# Installs what the test suite needs when it is missing: Debian packages
# (as root, or through sudo), and nothing when everything is already there.
# Idempotent: safe to run before every `make test`.
set -euo pipefail

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }

have age || need_apt+=(age)
have zstd || need_apt+=(zstd)
have sqlite3 || need_apt+=(sqlite3)
have shellcheck || need_apt+=(shellcheck)
have python3 || need_apt+=(python3)
have flock || need_apt+=(util-linux)
have script || need_apt+=(bsdutils)
have sha256sum || need_apt+=(coreutils)
have pg_dump || need_apt+=(postgresql-client)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need_apt+=(postgresql-15)
have runuser || need_apt+=(util-linux)
have mariadb || need_apt+=(mariadb-client)
have mariadb-dump || need_apt+=(mariadb-client)
[ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
have promtool || need_apt+=(prometheus)
have prometheus-pushgateway || need_apt+=(prometheus-pushgateway)
have systemd-analyze || need_apt+=(systemd)
have man || need_apt+=(man-db)
have openssl || need_apt+=(openssl)
have logrotate || need_apt+=(logrotate)
have strace || need_apt+=(strace)
have pkill || need_apt+=(procps)
# Azurite (the Azure Blob emulator) comes from npm.
have azurite-blob || have npm || need_apt+=(npm)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test-deps: installing ${need_apt[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
  elif have sudo; then
    SUDO=(sudo)
  else
    echo "test-deps: need root (or sudo) to install: ${need_apt[*]}" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The S3 tests run a real S3 server (s3s-fs, which verifies SigV4 signatures)
# and check the layout with the aws CLI.
if ! have s3s-fs; then
  echo "test-deps: installing s3s-fs 0.14.1 (cargo install; takes a few minutes)"
  cargo install s3s-fs --version 0.14.1 --features binary --locked --quiet
fi
# pip_install WHAT PACKAGE...: pip install, or say what is missing.
pip_install() {
  echo "test-deps: installing $1 (pip install ${*:2})"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "test-deps: pip is missing: install python3-pip, then run this again" >&2
    exit 2
  fi
  python3 -m pip install --quiet "${@:2}"
}
have aws || pip_install "the aws CLI" awscli
# moto's S3 server: the second S3 implementation (conditional writes included).
have moto_server || pip_install "moto's S3 server" 'moto[server]==5.2.1'
# Google Cloud Storage and Azure Blob emulators for the gs:// and az:// stores.
have gcp-storage-emulator || pip_install "the GCS emulator" 'gcp-storage-emulator==2026.7.19'
if ! have azurite-blob; then
  if ! have npm; then
    echo "test-deps: npm is missing: install nodejs and npm (Azurite comes from npm), then run this again" >&2
    exit 2
  fi
  echo "test-deps: installing Azurite (npm install -g azurite)"
  npm install -g --silent azurite@3
fi
# The Pushgateway's basic-auth users are bcrypt hashes.
python3 -c 'import bcrypt' 2>/dev/null || pip_install "bcrypt (Python)" 'bcrypt==4.2.1'

# DuckDB: the CLI binary ships inside the PyPI package duckdb-cli. It goes
# into a directory of its own and is linked as /usr/local/bin/duckdb, so
# `duckdb` is the binary itself, not a Python wrapper (a wrapper starts
# slower and leaves the real process running when it is killed).
if ! have duckdb; then
  echo "test-deps: installing the DuckDB CLI (pip install duckdb-cli)"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "test-deps: pip is missing: install python3-pip, then run this again" >&2
    exit 2
  fi
  if [ "$(id -u)" -eq 0 ]; then AS_ROOT=(); elif have sudo; then AS_ROOT=(sudo); else
    echo "test-deps: need root (or sudo) to install the DuckDB CLI into /opt/duckdb-cli" >&2
    exit 2
  fi
  "${AS_ROOT[@]}" python3 -m pip install --quiet --upgrade --target /opt/duckdb-cli duckdb-cli==1.5.6
  "${AS_ROOT[@]}" ln -sf /opt/duckdb-cli/duckdb_cli/duckdb /usr/local/bin/duckdb
fi

# PostgreSQL refuses to run as root: the test harness runs it as `postgres`.
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi
echo "test-deps: all test dependencies present"
