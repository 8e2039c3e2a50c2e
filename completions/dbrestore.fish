complete -c dbrestore -l store -d 'Pick the artifact from this store' -r
complete -c dbrestore -l timestamp -d 'With --store: the backup taken at exactly YYYYMMDD_HHMMSS' -r
complete -c dbrestore -l before -d 'With --store: the newest backup taken at or before TIME' -r
complete -c dbrestore -l name -d 'With --store: the backup with this name' -r
complete -c dbrestore -l env -d 'Narrow the series to this environment' -r
complete -c dbrestore -l database -d 'Narrow the series to this database' -r
complete -c dbrestore -l target -d 'Database URL to restore into: postgres://user@host:port/db (postgresql://), mysql://user@host:port/db (mariadb://, ?socket=PATH), sqlite:PATH, duckdb:PATH or dir:PATH' -r
complete -c dbrestore -l pgdata -d 'Point in time (PostgreSQL): restore a base backup into this new or empty data directory and configure recovery from the store\'s WAL archive' -r -F
complete -c dbrestore -l target-time -d 'With --pgdata: recover up to TIME (RFC 3339 or "YYYY-MM-DD HH:MM:SS" UTC), or `latest` to replay every archived WAL file' -r
complete -c dbrestore -l target-lsn -d 'With --pgdata: recover up to this WAL position (e.g. 0/3000158)' -r
complete -c dbrestore -l target-xid -d 'With --pgdata: recover up to this transaction id' -r
complete -c dbrestore -l target-name -d 'With --pgdata: recover up to this restore point (walship restore-point, dbsnap --restore-point)' -r
complete -c dbrestore -l target-action -d 'With --pgdata: what the server does at the target: promote (accept writes), pause (read-only, for inspection) or shutdown' -r -f -a "promote\t'End recovery and accept writes'
pause\t'Stay in recovery, read-only, for inspection: `SELECT pg_wal_replay_resume()` or `pg_ctl promote` moves on'
shutdown\t'Stop the server'"
complete -c dbrestore -l target-timeline -d 'With --pgdata: the timeline to recover along, a number, `current` (the base backup\'s) or `latest`. Needed only when the target lies on several timelines (exit 2 lists them)' -r
complete -c dbrestore -l port -d 'With --pgdata: the restored server\'s port (a recovery copy can run next to the damaged one)' -r
complete -c dbrestore -l socket-dir -d 'With --pgdata: where the restored server puts its socket (default: the data directory)' -r -F
complete -c dbrestore -l recovery-timeout -d 'With --pgdata --start: how long to wait for recovery' -r
complete -c dbrestore -l table -d 'Restore only this table (repeatable)' -r
complete -c dbrestore -s j -l jobs -d 'PostgreSQL: restore with N parallel pg_restore workers (default: the machine\'s cores up to 4, and 1 on a machine of 2 cores or fewer, where workers compete with the server). Above 1, the payload is decoded once, verified on the way, into a private temporary file under --tmpdir (plaintext, removed when the restore ends) that pg_restore -j reads; 1 streams it in one transaction without a copy on disk' -r
complete -c dbrestore -l before-cmd -d 'Run CMD (with `sh -c`) after verification and confirmation, before the safety backup and the restore: stop what uses the target. The environment names it: DBSAFE_TARGET, DBSAFE_DATABASE, DBSAFE_BACKUP. If CMD fails, nothing is changed (exit 1)' -r
complete -c dbrestore -l after-cmd -d 'Run CMD after the restore (and after a --before-cmd that failed), whatever happened: start what uses the target again. Its environment adds DBSAFE_RESULT (success or failure) and DBSAFE_MESSAGE. If CMD fails, the run fails (exit 1)' -r
complete -c dbrestore -l safety-dir -d 'Put the safety backup in this directory instead of the store' -r -F
complete -c dbrestore -s i -l identity -d 'age identity file (repeatable)' -r -F
complete -c dbrestore -l passphrase-file -d 'File whose first line is the passphrase' -r -F
complete -c dbrestore -l tmpdir -d 'Directory for temporary files (default: $TMPDIR)' -r -F
complete -c dbrestore -l config -d 'Config file [env: DBSAFE_CONFIG] (default: ./dbsafe.toml, /etc/dbsafe/dbsafe.toml)' -r -F
complete -c dbrestore -l metrics-file -d 'Merge Prometheus metrics into this textfile (node_exporter textfile collector)' -r -F
complete -c dbrestore -l pushgateway -d 'Push metrics to this Pushgateway (http://host:port); a failed push only warns' -r
complete -c dbrestore -l on-success -d 'Shell command run when the run succeeds, with DBSAFE_TOOL, DBSAFE_RESULT, DBSAFE_BACKUP, ... describing it; its failure only warns' -r
complete -c dbrestore -l on-failure -d 'Shell command run when the run fails (same environment)' -r
complete -c dbrestore -l notify -d 'POST the run\'s outcome as JSON (with a Slack-compatible `text`) to this URL; an unreachable webhook only warns' -r
complete -c dbrestore -l latest -d 'With --store: the newest backup of the series'
complete -c dbrestore -l target-exclusive -d 'With --pgdata: stop just before the target instead of just after it'
complete -c dbrestore -l start -d 'With --pgdata: start the server, wait for recovery to reach the target, promote, report'
complete -c dbrestore -l archive -d 'With --pgdata: the recovered server archives its new timeline into the store, as the new primary must. Without it (drills, inspection copies) archiving is off, so a recovery never adds a timeline to the archive'
complete -c dbrestore -l no-archive -d 'With --pgdata: archiving off in the restored copy (the default; kept for scripts)'
complete -c dbrestore -l create -d 'Create the target when it does not exist'
complete -c dbrestore -l clean -d 'Drop the target\'s existing objects first'
complete -c dbrestore -l no-owner -d 'PostgreSQL: restore every object owned by the connecting role instead of its recorded owner (owners are kept by default)'
complete -c dbrestore -l no-roles -d 'PostgreSQL: do not create the roles the backup recorded (owners and grants then need them to exist already)'
complete -c dbrestore -l skip-verify -d 'Do not verify the artifact before restoring'
complete -c dbrestore -l no-safety-backup -d 'Do not take a safety backup of a non-empty target'
complete -c dbrestore -l no-encrypt -d 'Let the safety backup be unencrypted where the target\'s own backups in the store are encrypted (refused otherwise)'
complete -c dbrestore -s y -l yes -d 'Do not ask for the typed confirmation'
complete -c dbrestore -l dry-run -d 'Print the plan, step by step, and change nothing'
complete -c dbrestore -s q -l quiet -d 'Print nothing but errors on stderr'
complete -c dbrestore -s v -l verbose -d 'Print more on stderr'
complete -c dbrestore -l json -d 'Print the report as one JSON document on stdout'
complete -c dbrestore -l allow-shared-store -d 'Use a local store directory that group or others can write to (refused otherwise: whoever can write there can replace a backup)'
complete -c dbrestore -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dbrestore -s V -l version -d 'Print version'
