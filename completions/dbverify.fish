complete -c dbverify -l level -d 'How deep to check' -r -f -a "quick\t'sha256 against the sidecar or --sha256'
full\t'quick, plus decrypt and decompress to the end, plus a structural check of the payload'
restore\t'full, plus a restore into a scratch target and a comparison of row counts'"
complete -c dbverify -l sha256 -d 'The sha256 the artifact must have (for stdin or a file without sidecar)' -r
complete -c dbverify -l meta -d 'Metadata for an artifact on stdin (dbsnap --meta)' -r -F
complete -c dbverify -l store -d 'Verify artifacts in this store' -r
complete -c dbverify -l env -d 'Only this environment\'s backups' -r
complete -c dbverify -l database -d 'Only this database\'s backups' -r
complete -c dbverify -l max-age -d 'With --status: the newest backup, and the newest verified one, of each series must be younger' -r
complete -c dbverify -l min-count -d 'With --status: each series must hold at least this many backups' -r
complete -c dbverify -l max-wal-lag -d 'With --status: the newest archived WAL segment must be younger' -r
complete -c dbverify -l scratch -d 'Server URL for scratch databases at --level restore' -r
complete -c dbverify -s i -l identity -d 'age identity file (repeatable)' -r -F
complete -c dbverify -l passphrase-file -d 'File whose first line is the passphrase' -r -F
complete -c dbverify -l tmpdir -d 'Directory for temporary files (default: $TMPDIR)' -r -F
complete -c dbverify -l config -d 'Config file [env: DBSAFE_CONFIG] (default: ./dbsafe.toml, /etc/dbsafe/dbsafe.toml)' -r -F
complete -c dbverify -l metrics-file -d 'Merge Prometheus metrics into this textfile (node_exporter textfile collector)' -r -F
complete -c dbverify -l pushgateway -d 'Push metrics to this Pushgateway (http://host:port); a failed push only warns' -r
complete -c dbverify -l on-success -d 'Shell command run when the run succeeds, with DBSAFE_TOOL, DBSAFE_RESULT, DBSAFE_BACKUP, ... describing it; its failure only warns' -r
complete -c dbverify -l on-failure -d 'Shell command run when the run fails (same environment)' -r
complete -c dbverify -l notify -d 'POST the run\'s outcome as JSON (with a Slack-compatible `text`) to this URL; an unreachable webhook only warns' -r
complete -c dbverify -l latest -d 'With --store: the newest artifact of each series'
complete -c dbverify -l all -d 'With --store: every artifact'
complete -c dbverify -l status -d 'Report store health instead of verifying (needs --store); exit 1 unless good'
complete -c dbverify -l list -d 'List the store\'s backups (time, kind, engine, size, encryption, verification, pins), safety backups apart, and PostgreSQL\'s recovery window per timeline; verifies nothing'
complete -c dbverify -l no-roles -d 'At --level restore (PostgreSQL): do not create the roles the backup recorded, to prove the scratch server has them (a fresh `initdb` cluster is the honest scratch)'
complete -c dbverify -s q -l quiet -d 'Print nothing but errors on stderr'
complete -c dbverify -s v -l verbose -d 'Print more on stderr'
complete -c dbverify -l json -d 'Print the report as one JSON document on stdout'
complete -c dbverify -l allow-shared-store -d 'Use a local store directory that group or others can write to (refused otherwise: whoever can write there can replace a backup)'
complete -c dbverify -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dbverify -s V -l version -d 'Print version'
