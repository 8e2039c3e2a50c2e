complete -c dbprune -l store -d 'The store to prune' -r
complete -c dbprune -l env -d 'Only this environment\'s backups' -r
complete -c dbprune -l database -d 'Only this database\'s backups' -r
complete -c dbprune -l keep-last -d 'Keep the newest N of each series' -r
complete -c dbprune -l keep-within -d 'Keep everything younger than D (e.g. 30d)' -r
complete -c dbprune -l keep-hourly -d 'Keep the newest backup of each of the last N hours that have one' -r
complete -c dbprune -l keep-daily -d '... of each of the last N days (UTC)' -r
complete -c dbprune -l keep-weekly -d '... of each of the last N ISO weeks' -r
complete -c dbprune -l keep-monthly -d '... of each of the last N months' -r
complete -c dbprune -l min-free -d 'Delete further unprotected backups, oldest first, until the store\'s filesystem has SIZE free' -r
complete -c dbprune -l max-total -d 'Delete further unprotected backups, oldest first, until the backups total at most SIZE' -r
complete -c dbprune -l stale-tmp -d 'Remove temporaries, and sidecars without their artifact, of crashed writers older than this' -r
complete -c dbprune -l config -d 'Config file [env: DBSAFE_CONFIG] (default: ./dbsafe.toml, /etc/dbsafe/dbsafe.toml)' -r -F
complete -c dbprune -l metrics-file -d 'Merge Prometheus metrics into this textfile (node_exporter textfile collector)' -r -F
complete -c dbprune -l pushgateway -d 'Push metrics to this Pushgateway (http://host:port); a failed push only warns' -r
complete -c dbprune -l on-success -d 'Shell command run when the run succeeds, with DBSAFE_TOOL, DBSAFE_RESULT, DBSAFE_BACKUP, ... describing it; its failure only warns' -r
complete -c dbprune -l on-failure -d 'Shell command run when the run fails (same environment)' -r
complete -c dbprune -l notify -d 'POST the run\'s outcome as JSON (with a Slack-compatible `text`) to this URL; an unreachable webhook only warns' -r
complete -c dbprune -l wal -d 'Also delete archived WAL that no kept base backup needs (history files stay)'
complete -c dbprune -l dry-run -d 'Print what would be deleted and why; delete nothing'
complete -c dbprune -s q -l quiet -d 'Print nothing but errors on stderr'
complete -c dbprune -s v -l verbose -d 'Print more on stderr'
complete -c dbprune -l json -d 'Print the report as one JSON document on stdout'
complete -c dbprune -l allow-shared-store -d 'Use a local store directory that group or others can write to (refused otherwise: whoever can write there can replace a backup)'
complete -c dbprune -s h -l help -d 'Print help'
complete -c dbprune -s V -l version -d 'Print version'
