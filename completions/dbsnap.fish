complete -c dbsnap -s o -l output -d 'Write the artifact to FILE (plus FILE.sha256 and FILE.meta.json); `-` is stdout' -r -F
complete -c dbsnap -l to -d 'Write the artifact into a store, named, with sidecars and the series\' _latest link. Repeatable: one dump streamed to every store (a second copy, e.g. local and S3); the run fails (exit 1) naming the stores that did not get it, the others keep theirs' -r
complete -c dbsnap -l restore-point -d 'PostgreSQL: mark the WAL with this restore point just before the snapshot (dbrestore --target-name NAME recovers to it) and archive it' -r
complete -c dbsnap -l compress -d 'Compression: zstd (default, frame checksums on), gzip or none' -r
complete -c dbsnap -l level -d 'Compression level: `auto` (zstd\'s default: the level moves between 1 and 6 so that compression keeps up with the source, as `zstd --adapt` does; the levels used go into the metadata), or a fixed level (zstd 1-19; gzip 1-9, default 6)' -r
complete -c dbsnap -l threads -d 'zstd worker threads (0: compress on the pipeline thread). Default: on a machine of more than 2 cores, the cores beyond 2 (up to 4), which the database and the dump do not need; otherwise 0' -r
complete -c dbsnap -s r -l recipient -d 'age recipient public key (repeatable, or comma-separated in DBSAFE_RECIPIENTS)' -r
complete -c dbsnap -l recipients-file -d 'File of age recipients, one a line' -r -F
complete -c dbsnap -l passphrase-file -d 'Encrypt with the passphrase on this file\'s first line instead' -r -F
complete -c dbsnap -l env -d 'Environment name used in the artifact name' -r
complete -c dbsnap -l label -d 'Label recorded in the metadata (repeatable)' -r
complete -c dbsnap -l table -d 'Only this table (repeatable)' -r
complete -c dbsnap -l exclude-table -d 'Leave this table out (repeatable)' -r
complete -c dbsnap -l meta -d 'With stdout output, write the metadata to FILE' -r -F
complete -c dbsnap -l max-size -d 'Abort and clean up once the artifact grows past SIZE (e.g. 10G)' -r
complete -c dbsnap -l min-free -d 'Refuse to start when the store\'s filesystem has less than SIZE free' -r
complete -c dbsnap -l lock-timeout -d 'Wait this long for the series lock (default 0: fail at once with exit 4)' -r
complete -c dbsnap -l tmpdir -d 'Directory for temporary files (default: $TMPDIR)' -r -F
complete -c dbsnap -l config -d 'Config file [env: DBSAFE_CONFIG] (default: ./dbsafe.toml, /etc/dbsafe/dbsafe.toml)' -r -F
complete -c dbsnap -l metrics-file -d 'Merge Prometheus metrics into this textfile (node_exporter textfile collector)' -r -F
complete -c dbsnap -l pushgateway -d 'Push metrics to this Pushgateway (http://host:port); a failed push only warns' -r
complete -c dbsnap -l on-success -d 'Shell command run when the run succeeds, with DBSAFE_TOOL, DBSAFE_RESULT, DBSAFE_BACKUP, ... describing it; its failure only warns' -r
complete -c dbsnap -l on-failure -d 'Shell command run when the run fails (same environment)' -r
complete -c dbsnap -l notify -d 'POST the run\'s outcome as JSON (with a Slack-compatible `text`) to this URL; an unreachable webhook only warns' -r
complete -c dbsnap -l base -d 'Take a physical base backup (PostgreSQL) instead of a logical snapshot'
complete -c dbsnap -l no-encrypt -d 'Write the artifact unencrypted to a file or a store (refused without it when no key is given; config: encrypt = false)'
complete -c dbsnap -s q -l quiet -d 'Print nothing but errors on stderr'
complete -c dbsnap -s v -l verbose -d 'Print more on stderr'
complete -c dbsnap -l json -d 'Print the report as one JSON document on stdout'
complete -c dbsnap -l allow-shared-store -d 'Use a local store directory that group or others can write to (refused otherwise: whoever can write there can replace a backup)'
complete -c dbsnap -s h -l help -d 'Print help'
complete -c dbsnap -s V -l version -d 'Print version'
