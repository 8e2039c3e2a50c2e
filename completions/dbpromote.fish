complete -c dbpromote -l from -d 'Source environment (releases and refreshes)' -r
complete -c dbpromote -l to -d 'Target environment' -r
complete -c dbpromote -l version -d 'The version a release promotes (a manifest name: letters, digits, \'.\', \'_\', \'-\', \'+\'); `--version` without a value prints dbpromote\'s own version' -r
complete -c dbpromote -l migrate -d 'Migration command (default: the target environment\'s `migrate`)' -r
complete -c dbpromote -l health-check -d 'Health check command (default: the target environment\'s `health_check`)' -r
complete -c dbpromote -l downgrade -d 'Downgrade command (default: the target environment\'s `downgrade`)' -r
complete -c dbpromote -l sanitize -d 'Refresh: SQL run on the copy before it is swapped in (required from a sensitive source)' -r -F
complete -c dbpromote -l backup -d 'Refresh: use this backup from the source\'s store instead of a new snapshot' -r
complete -c dbpromote -l grace -d 'Sessions on the target are ended after this long (e.g. 30s); without it they refuse the swap' -r
complete -c dbpromote -l keep-previous -d 'Refresh: previous databases to keep (the newest is the rollback point; older ones are dropped)' -r
complete -c dbpromote -l store -d 'The target environment\'s store (default: its `store` in the config file)' -r
complete -c dbpromote -l from-store -d 'Refresh: the source environment\'s store (default: its `store` in the config file)' -r
complete -c dbpromote -l lock-timeout -d 'How long to wait for another promotion of the same environment (default 0: refuse at once)' -r
complete -c dbpromote -s i -l identity -d 'age identity file (repeatable)' -r -F
complete -c dbpromote -l passphrase-file -d 'File whose first line is the passphrase' -r -F
complete -c dbpromote -l tmpdir -d 'Directory for temporary files (default: $TMPDIR)' -r -F
complete -c dbpromote -l config -d 'Config file [env: DBSAFE_CONFIG] (default: ./dbsafe.toml, /etc/dbsafe/dbsafe.toml)' -r -F
complete -c dbpromote -l metrics-file -d 'Merge Prometheus metrics into this textfile (node_exporter textfile collector)' -r -F
complete -c dbpromote -l pushgateway -d 'Push metrics to this Pushgateway (http://host:port); a failed push only warns' -r
complete -c dbpromote -l on-success -d 'Shell command run when the run succeeds, with DBSAFE_TOOL, DBSAFE_RESULT, DBSAFE_BACKUP, ... describing it; its failure only warns' -r
complete -c dbpromote -l on-failure -d 'Shell command run when the run fails (same environment)' -r
complete -c dbpromote -l notify -d 'POST the run\'s outcome as JSON (with a Slack-compatible `text`) to this URL; an unreachable webhook only warns' -r
complete -c dbpromote -s V -d 'Print dbpromote\'s version'
complete -c dbpromote -l refresh -d 'Move data down: replace --to\'s database with a sanitized copy of --from\'s'
complete -c dbpromote -l rollback -d 'Undo the last successful promotion of --to (or the one of --version)'
complete -c dbpromote -l history -d 'List --to\'s promotions'
complete -c dbpromote -l latest-verified -d 'Refresh: use the newest verified backup from the source\'s store'
complete -c dbpromote -l restore-backup -d 'Rollback of a release: restore the pre-release backup even when a downgrade command exists'
complete -c dbpromote -s y -l yes -d 'Do not ask for the typed confirmation'
complete -c dbpromote -l dry-run -d 'Print the plan, step by step, and change nothing'
complete -c dbpromote -s q -l quiet -d 'Print nothing but errors on stderr'
complete -c dbpromote -s v -l verbose -d 'Print more on stderr'
complete -c dbpromote -l json -d 'Print the report as one JSON document on stdout'
complete -c dbpromote -l allow-shared-store -d 'Use a local store directory that group or others can write to (refused otherwise: whoever can write there can replace a backup)'
complete -c dbpromote -s h -l help -d 'Print help'
