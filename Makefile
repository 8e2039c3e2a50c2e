# dbsafe: the two commands of the README are `make demo` and `make test`.
PREFIX ?= /usr/local
CARGO ?= cargo
# Where cargo puts its builds: CARGO_TARGET_DIR when set, as cargo itself does.
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
TOOLS := dbsnap dbverify dbrestore dbprune walship dbpromote
# What `make install` copies (default: what `make release` built).
BIN_DIR ?= $(TARGET_DIR)/release
SCRIPTS := $(wildcard scripts/*.sh)

.PHONY: all build release demo test test-deps lint man install uninstall deb bench bench-restore bench-pitr clean

all: build

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --release --workspace --bins

## demo: the main job on a sample SQLite database, end to end
demo: release
	DBSAFE_BIN_DIR=$(TARGET_DIR)/release scripts/demo.sh

test-deps:
	scripts/test-deps.sh

## test: install what the tests need, build once, run everything
## (TEST_THREADS: tests at once; most wait on servers, not on the CPU)
TEST_THREADS ?= 4
test: test-deps build
	$(CARGO) test --workspace --no-fail-fast -- --test-threads $(TEST_THREADS)

## bench: dbsafe against the dump tools and shell pipelines it replaces (not a test)
bench: release
	DBSAFE_BIN_DIR=$(TARGET_DIR)/release scripts/bench.sh
	DBSAFE_BIN_DIR=$(TARGET_DIR)/release scripts/bench-restore.sh
	DBSAFE_BIN_DIR=$(TARGET_DIR)/release scripts/bench-pitr.sh

## bench-restore: dbrestore against pg_restore of the same dump, median of runs
bench-restore: release
	DBSAFE_BIN_DIR=$(TARGET_DIR)/release scripts/bench-restore.sh

## bench-pitr: a point-in-time recovery by dbrestore against the same one by hand
bench-pitr: release
	DBSAFE_BIN_DIR=$(TARGET_DIR)/release scripts/bench-pitr.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	shellcheck -x $(SCRIPTS) .ci/run

## man: regenerate man pages and shell completions from the clap definitions
man:
	$(CARGO) run -q -p xtask -- man

## install: copies what `make release` built (run that first, as yourself:
## installing as root never builds, so root never writes into your checkout)
install:
	@for t in $(TOOLS); do [ -x $(BIN_DIR)/$$t ] || { \
		echo "make install: $(BIN_DIR)/$$t is missing: run 'make release' first (not as root)" >&2; exit 2; }; done
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5 \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions \
		$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d \
		$(DESTDIR)$(PREFIX)/share/dbsafe $(DESTDIR)$(PREFIX)/lib/systemd/system \
		$(DESTDIR)$(PREFIX)/lib/sysusers.d
	for t in $(TOOLS); do install -m 0755 $(BIN_DIR)/$$t $(DESTDIR)$(PREFIX)/bin/$$t; done
	install -m 0644 man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 0644 man/*.5 $(DESTDIR)$(PREFIX)/share/man/man5/
	install -m 0755 scripts/backup.sh scripts/verify.sh scripts/restore.sh scripts/pitr.sh \
		scripts/release.sh scripts/postgres-wal-config.sh $(DESTDIR)$(PREFIX)/share/dbsafe/
	install -m 0644 scripts/crontab.example $(DESTDIR)$(PREFIX)/share/dbsafe/
	# Units name the scripts under this PREFIX, and go where systemd looks for them.
	for u in scripts/systemd/*.service scripts/systemd/*.timer; do \
		sed 's|/usr/local/|$(PREFIX)/|g' $$u > $(DESTDIR)$(PREFIX)/lib/systemd/system/$$(basename $$u); \
		chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/$$(basename $$u); \
	done
	install -m 0644 scripts/systemd/dbsafe.sysusers.conf $(DESTDIR)$(PREFIX)/lib/sysusers.d/dbsafe.conf
	for t in $(TOOLS); do \
		install -m 0644 completions/$$t.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/$$t; \
		install -m 0644 completions/_$$t $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_$$t; \
		install -m 0644 completions/$$t.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/$$t.fish; \
	done

## deb: a Debian package (dpkg-deb) of what `make release` built, in target/deb
deb: release
	DBSAFE_BIN_DIR=$(TARGET_DIR)/release scripts/deb.sh

## uninstall: removes exactly what install put there
uninstall:
	for t in $(TOOLS); do \
		rm -f $(DESTDIR)$(PREFIX)/bin/$$t $(DESTDIR)$(PREFIX)/share/man/man1/$$t.1 \
			$(DESTDIR)$(PREFIX)/share/bash-completion/completions/$$t \
			$(DESTDIR)$(PREFIX)/share/zsh/site-functions/_$$t \
			$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/$$t.fish; \
	done
	rm -f $(DESTDIR)$(PREFIX)/share/man/man5/dbsafe.toml.5 $(DESTDIR)$(PREFIX)/lib/sysusers.d/dbsafe.conf
	for u in scripts/systemd/*.service scripts/systemd/*.timer; do \
		rm -f $(DESTDIR)$(PREFIX)/lib/systemd/system/$$(basename $$u); \
	done
	rm -rf $(DESTDIR)$(PREFIX)/share/dbsafe

clean:
	$(CARGO) clean
