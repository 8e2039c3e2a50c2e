# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_walship_global_optspecs
    string join \n q/quiet v/verbose json config= metrics-file= allow-shared-store pushgateway= on-success= on-failure= notify= h/help V/version
end

function __fish_walship_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_walship_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_walship_using_subcommand
    set -l cmd (__fish_walship_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c walship -n "__fish_walship_needs_command" -l config -d 'Config file [env: DBSAFE_CONFIG] (default: ./dbsafe.toml, /etc/dbsafe/dbsafe.toml)' -r -F
complete -c walship -n "__fish_walship_needs_command" -l metrics-file -d 'Merge Prometheus metrics into this textfile (node_exporter textfile collector)' -r -F
complete -c walship -n "__fish_walship_needs_command" -l pushgateway -d 'Push metrics to this Pushgateway (http://host:port); a failed push only warns' -r
complete -c walship -n "__fish_walship_needs_command" -l on-success -d 'Shell command run when the run succeeds, with DBSAFE_TOOL, DBSAFE_RESULT, DBSAFE_BACKUP, ... describing it; its failure only warns' -r
complete -c walship -n "__fish_walship_needs_command" -l on-failure -d 'Shell command run when the run fails (same environment)' -r
complete -c walship -n "__fish_walship_needs_command" -l notify -d 'POST the run\'s outcome as JSON (with a Slack-compatible `text`) to this URL; an unreachable webhook only warns' -r
complete -c walship -n "__fish_walship_needs_command" -s q -l quiet -d 'Print nothing but errors on stderr'
complete -c walship -n "__fish_walship_needs_command" -s v -l verbose -d 'Print more on stderr'
complete -c walship -n "__fish_walship_needs_command" -l json -d 'Print the report as one JSON document on stdout'
complete -c walship -n "__fish_walship_needs_command" -l allow-shared-store -d 'Use a local store directory that group or others can write to (refused otherwise: whoever can write there can replace a backup)'
complete -c walship -n "__fish_walship_needs_command" -s h -l help -d 'Print help'
complete -c walship -n "__fish_walship_needs_command" -s V -l version -d 'Print version'
complete -c walship -n "__fish_walship_needs_command" -f -a "push" -d 'Archive a WAL file (archive_command = \'walship push %p %f\')'
complete -c walship -n "__fish_walship_needs_command" -f -a "fetch" -d 'Restore an archived WAL file (restore_command = \'walship fetch %f %p\')'
complete -c walship -n "__fish_walship_needs_command" -f -a "list" -d 'List archived WAL files'
complete -c walship -n "__fish_walship_needs_command" -f -a "status" -d 'Newest segment, its age, gaps per timeline; exit 1 when lagging or gapped'
complete -c walship -n "__fish_walship_needs_command" -f -a "restore-point" -d 'Mark this moment in the WAL with a name `dbrestore --target-name` can recover to (pg_create_restore_point), and switch segments so the mark reaches the archive now'
complete -c walship -n "__fish_walship_needs_command" -f -a "prune" -d 'Delete archived WAL that is no longer needed (.history files always stay)'
complete -c walship -n "__fish_walship_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c walship -n "__fish_walship_using_subcommand push" -l to -d 'The store. Repeatable: the file counts as archived (exit 0) only once every store has it; a store that fails is named (exit 1) and PostgreSQL retries the push, which the stores that have it answer as already archived' -r
complete -c walship -n "__fish_walship_using_subcommand push" -l spool -d 'With --async: the spool directory (local disk, kept across reboots)' -r -F
complete -c walship -n "__fish_walship_using_subcommand push" -l spool-max -d 'With --async: what the spool may hold (default 1G); a push that would pass it fails (exit 1, PostgreSQL keeps the WAL and retries), it never drops a file' -r
complete -c walship -n "__fish_walship_using_subcommand push" -l compress -d 'Compression: zstd (default, frame checksums on), gzip or none' -r
complete -c walship -n "__fish_walship_using_subcommand push" -l level -d 'Compression level: `auto` (zstd\'s default: the level moves between 1 and 6 so that compression keeps up with the source, as `zstd --adapt` does; the levels used go into the metadata), or a fixed level (zstd 1-19; gzip 1-9, default 6)' -r
complete -c walship -n "__fish_walship_using_subcommand push" -l threads -d 'zstd worker threads (0: compress on the pipeline thread). Default: on a machine of more than 2 cores, the cores beyond 2 (up to 4), which the database and the dump do not need; otherwise 0' -r
complete -c walship -n "__fish_walship_using_subcommand push" -s r -l recipient -d 'age recipient public key (repeatable, or comma-separated in DBSAFE_RECIPIENTS)' -r
complete -c walship -n "__fish_walship_using_subcommand push" -l recipients-file -d 'File of age recipients, one a line' -r -F
complete -c walship -n "__fish_walship_using_subcommand push" -l passphrase-file -d 'Encrypt with the passphrase on this file\'s first line instead' -r -F
complete -c walship -n "__fish_walship_using_subcommand push" -l config -d 'Config file [env: DBSAFE_CONFIG] (default: ./dbsafe.toml, /etc/dbsafe/dbsafe.toml)' -r -F
complete -c walship -n "__fish_walship_using_subcommand push" -l metrics-file -d 'Merge Prometheus metrics into this textfile (node_exporter textfile collector)' -r -F
complete -c walship -n "__fish_walship_using_subcommand push" -l pushgateway -d 'Push metrics to this Pushgateway (http://host:port); a failed push only warns' -r
complete -c walship -n "__fish_walship_using_subcommand push" -l on-success -d 'Shell command run when the run succeeds, with DBSAFE_TOOL, DBSAFE_RESULT, DBSAFE_BACKUP, ... describing it; its failure only warns' -r
complete -c walship -n "__fish_walship_using_subcommand push" -l on-failure -d 'Shell command run when the run fails (same environment)' -r
complete -c walship -n "__fish_walship_using_subcommand push" -l notify -d 'POST the run\'s outcome as JSON (with a Slack-compatible `text`) to this URL; an unreachable webhook only warns' -r
complete -c walship -n "__fish_walship_using_subcommand push" -l async -d 'Acknowledge the file once it is durable in the local --spool, and ship the spool to the stores in the background (several files at once); the archiver does not wait on the stores. A file is removed from the spool once every store has it'
complete -c walship -n "__fish_walship_using_subcommand push" -l no-encrypt -d 'Write the artifact unencrypted to a file or a store (refused without it when no key is given; config: encrypt = false)'
complete -c walship -n "__fish_walship_using_subcommand push" -s q -l quiet -d 'Print nothing but errors on stderr'
complete -c walship -n "__fish_walship_using_subcommand push" -s v -l verbose -d 'Print more on stderr'
complete -c walship -n "__fish_walship_using_subcommand push" -l json -d 'Print the report as one JSON document on stdout'
complete -c walship -n "__fish_walship_using_subcommand push" -l allow-shared-store -d 'Use a local store directory that group or others can write to (refused otherwise: whoever can write there can replace a backup)'
complete -c walship -n "__fish_walship_using_subcommand push" -s h -l help -d 'Print help'
complete -c walship -n "__fish_walship_using_subcommand fetch" -l from -d 'The store' -r
complete -c walship -n "__fish_walship_using_subcommand fetch" -s i -l identity -d 'age identity file (repeatable)' -r -F
complete -c walship -n "__fish_walship_using_subcommand fetch" -l passphrase-file -d 'File whose first line is the passphrase' -r -F
complete -c walship -n "__fish_walship_using_subcommand fetch" -l config -d 'Config file [env: DBSAFE_CONFIG] (default: ./dbsafe.toml, /etc/dbsafe/dbsafe.toml)' -r -F
complete -c walship -n "__fish_walship_using_subcommand fetch" -l metrics-file -d 'Merge Prometheus metrics into this textfile (node_exporter textfile collector)' -r -F
complete -c walship -n "__fish_walship_using_subcommand fetch" -l pushgateway -d 'Push metrics to this Pushgateway (http://host:port); a failed push only warns' -r
complete -c walship -n "__fish_walship_using_subcommand fetch" -l on-success -d 'Shell command run when the run succeeds, with DBSAFE_TOOL, DBSAFE_RESULT, DBSAFE_BACKUP, ... describing it; its failure only warns' -r
complete -c walship -n "__fish_walship_using_subcommand fetch" -l on-failure -d 'Shell command run when the run fails (same environment)' -r
complete -c walship -n "__fish_walship_using_subcommand fetch" -l notify -d 'POST the run\'s outcome as JSON (with a Slack-compatible `text`) to this URL; an unreachable webhook only warns' -r
complete -c walship -n "__fish_walship_using_subcommand fetch" -s q -l quiet -d 'Print nothing but errors on stderr'
complete -c walship -n "__fish_walship_using_subcommand fetch" -s v -l verbose -d 'Print more on stderr'
complete -c walship -n "__fish_walship_using_subcommand fetch" -l json -d 'Print the report as one JSON document on stdout'
complete -c walship -n "__fish_walship_using_subcommand fetch" -l allow-shared-store -d 'Use a local store directory that group or others can write to (refused otherwise: whoever can write there can replace a backup)'
complete -c walship -n "__fish_walship_using_subcommand fetch" -s h -l help -d 'Print help'
complete -c walship -n "__fish_walship_using_subcommand list" -l from -d 'The store' -r
complete -c walship -n "__fish_walship_using_subcommand list" -l config -d 'Config file [env: DBSAFE_CONFIG] (default: ./dbsafe.toml, /etc/dbsafe/dbsafe.toml)' -r -F
complete -c walship -n "__fish_walship_using_subcommand list" -l metrics-file -d 'Merge Prometheus metrics into this textfile (node_exporter textfile collector)' -r -F
complete -c walship -n "__fish_walship_using_subcommand list" -l pushgateway -d 'Push metrics to this Pushgateway (http://host:port); a failed push only warns' -r
complete -c walship -n "__fish_walship_using_subcommand list" -l on-success -d 'Shell command run when the run succeeds, with DBSAFE_TOOL, DBSAFE_RESULT, DBSAFE_BACKUP, ... describing it; its failure only warns' -r
complete -c walship -n "__fish_walship_using_subcommand list" -l on-failure -d 'Shell command run when the run fails (same environment)' -r
complete -c walship -n "__fish_walship_using_subcommand list" -l notify -d 'POST the run\'s outcome as JSON (with a Slack-compatible `text`) to this URL; an unreachable webhook only warns' -r
complete -c walship -n "__fish_walship_using_subcommand list" -s q -l quiet -d 'Print nothing but errors on stderr'
complete -c walship -n "__fish_walship_using_subcommand list" -s v -l verbose -d 'Print more on stderr'
complete -c walship -n "__fish_walship_using_subcommand list" -l json -d 'Print the report as one JSON document on stdout'
complete -c walship -n "__fish_walship_using_subcommand list" -l allow-shared-store -d 'Use a local store directory that group or others can write to (refused otherwise: whoever can write there can replace a backup)'
complete -c walship -n "__fish_walship_using_subcommand list" -s h -l help -d 'Print help'
complete -c walship -n "__fish_walship_using_subcommand status" -l from -d 'The store' -r
complete -c walship -n "__fish_walship_using_subcommand status" -l max-lag -d 'The newest segment must be younger than this' -r
complete -c walship -n "__fish_walship_using_subcommand status" -l spool -d 'Also report this --async spool: what is queued, and any file no retry can ship (the store holds other bytes under its name), which fails every push until resolved' -r -F
complete -c walship -n "__fish_walship_using_subcommand status" -l config -d 'Config file [env: DBSAFE_CONFIG] (default: ./dbsafe.toml, /etc/dbsafe/dbsafe.toml)' -r -F
complete -c walship -n "__fish_walship_using_subcommand status" -l metrics-file -d 'Merge Prometheus metrics into this textfile (node_exporter textfile collector)' -r -F
complete -c walship -n "__fish_walship_using_subcommand status" -l pushgateway -d 'Push metrics to this Pushgateway (http://host:port); a failed push only warns' -r
complete -c walship -n "__fish_walship_using_subcommand status" -l on-success -d 'Shell command run when the run succeeds, with DBSAFE_TOOL, DBSAFE_RESULT, DBSAFE_BACKUP, ... describing it; its failure only warns' -r
complete -c walship -n "__fish_walship_using_subcommand status" -l on-failure -d 'Shell command run when the run fails (same environment)' -r
complete -c walship -n "__fish_walship_using_subcommand status" -l notify -d 'POST the run\'s outcome as JSON (with a Slack-compatible `text`) to this URL; an unreachable webhook only warns' -r
complete -c walship -n "__fish_walship_using_subcommand status" -s q -l quiet -d 'Print nothing but errors on stderr'
complete -c walship -n "__fish_walship_using_subcommand status" -s v -l verbose -d 'Print more on stderr'
complete -c walship -n "__fish_walship_using_subcommand status" -l json -d 'Print the report as one JSON document on stdout'
complete -c walship -n "__fish_walship_using_subcommand status" -l allow-shared-store -d 'Use a local store directory that group or others can write to (refused otherwise: whoever can write there can replace a backup)'
complete -c walship -n "__fish_walship_using_subcommand status" -s h -l help -d 'Print help'
complete -c walship -n "__fish_walship_using_subcommand restore-point" -l to -d 'Record it in this store too, so dbrestore --target-name knows where it is' -r
complete -c walship -n "__fish_walship_using_subcommand restore-point" -l config -d 'Config file [env: DBSAFE_CONFIG] (default: ./dbsafe.toml, /etc/dbsafe/dbsafe.toml)' -r -F
complete -c walship -n "__fish_walship_using_subcommand restore-point" -l metrics-file -d 'Merge Prometheus metrics into this textfile (node_exporter textfile collector)' -r -F
complete -c walship -n "__fish_walship_using_subcommand restore-point" -l pushgateway -d 'Push metrics to this Pushgateway (http://host:port); a failed push only warns' -r
complete -c walship -n "__fish_walship_using_subcommand restore-point" -l on-success -d 'Shell command run when the run succeeds, with DBSAFE_TOOL, DBSAFE_RESULT, DBSAFE_BACKUP, ... describing it; its failure only warns' -r
complete -c walship -n "__fish_walship_using_subcommand restore-point" -l on-failure -d 'Shell command run when the run fails (same environment)' -r
complete -c walship -n "__fish_walship_using_subcommand restore-point" -l notify -d 'POST the run\'s outcome as JSON (with a Slack-compatible `text`) to this URL; an unreachable webhook only warns' -r
complete -c walship -n "__fish_walship_using_subcommand restore-point" -s q -l quiet -d 'Print nothing but errors on stderr'
complete -c walship -n "__fish_walship_using_subcommand restore-point" -s v -l verbose -d 'Print more on stderr'
complete -c walship -n "__fish_walship_using_subcommand restore-point" -l json -d 'Print the report as one JSON document on stdout'
complete -c walship -n "__fish_walship_using_subcommand restore-point" -l allow-shared-store -d 'Use a local store directory that group or others can write to (refused otherwise: whoever can write there can replace a backup)'
complete -c walship -n "__fish_walship_using_subcommand restore-point" -s h -l help -d 'Print help'
complete -c walship -n "__fish_walship_using_subcommand prune" -l from -d 'The store' -r
complete -c walship -n "__fish_walship_using_subcommand prune" -l before -d 'Delete files before this segment' -r
complete -c walship -n "__fish_walship_using_subcommand prune" -l config -d 'Config file [env: DBSAFE_CONFIG] (default: ./dbsafe.toml, /etc/dbsafe/dbsafe.toml)' -r -F
complete -c walship -n "__fish_walship_using_subcommand prune" -l metrics-file -d 'Merge Prometheus metrics into this textfile (node_exporter textfile collector)' -r -F
complete -c walship -n "__fish_walship_using_subcommand prune" -l pushgateway -d 'Push metrics to this Pushgateway (http://host:port); a failed push only warns' -r
complete -c walship -n "__fish_walship_using_subcommand prune" -l on-success -d 'Shell command run when the run succeeds, with DBSAFE_TOOL, DBSAFE_RESULT, DBSAFE_BACKUP, ... describing it; its failure only warns' -r
complete -c walship -n "__fish_walship_using_subcommand prune" -l on-failure -d 'Shell command run when the run fails (same environment)' -r
complete -c walship -n "__fish_walship_using_subcommand prune" -l notify -d 'POST the run\'s outcome as JSON (with a Slack-compatible `text`) to this URL; an unreachable webhook only warns' -r
complete -c walship -n "__fish_walship_using_subcommand prune" -l keep-for-backups -d 'Delete what no base backup in the store needs'
complete -c walship -n "__fish_walship_using_subcommand prune" -l dry-run -d 'Print what would go; delete nothing'
complete -c walship -n "__fish_walship_using_subcommand prune" -s q -l quiet -d 'Print nothing but errors on stderr'
complete -c walship -n "__fish_walship_using_subcommand prune" -s v -l verbose -d 'Print more on stderr'
complete -c walship -n "__fish_walship_using_subcommand prune" -l json -d 'Print the report as one JSON document on stdout'
complete -c walship -n "__fish_walship_using_subcommand prune" -l allow-shared-store -d 'Use a local store directory that group or others can write to (refused otherwise: whoever can write there can replace a backup)'
complete -c walship -n "__fish_walship_using_subcommand prune" -s h -l help -d 'Print help'
complete -c walship -n "__fish_walship_using_subcommand help; and not __fish_seen_subcommand_from push fetch list status restore-point prune help" -f -a "push" -d 'Archive a WAL file (archive_command = \'walship push %p %f\')'
complete -c walship -n "__fish_walship_using_subcommand help; and not __fish_seen_subcommand_from push fetch list status restore-point prune help" -f -a "fetch" -d 'Restore an archived WAL file (restore_command = \'walship fetch %f %p\')'
complete -c walship -n "__fish_walship_using_subcommand help; and not __fish_seen_subcommand_from push fetch list status restore-point prune help" -f -a "list" -d 'List archived WAL files'
complete -c walship -n "__fish_walship_using_subcommand help; and not __fish_seen_subcommand_from push fetch list status restore-point prune help" -f -a "status" -d 'Newest segment, its age, gaps per timeline; exit 1 when lagging or gapped'
complete -c walship -n "__fish_walship_using_subcommand help; and not __fish_seen_subcommand_from push fetch list status restore-point prune help" -f -a "restore-point" -d 'Mark this moment in the WAL with a name `dbrestore --target-name` can recover to (pg_create_restore_point), and switch segments so the mark reaches the archive now'
complete -c walship -n "__fish_walship_using_subcommand help; and not __fish_seen_subcommand_from push fetch list status restore-point prune help" -f -a "prune" -d 'Delete archived WAL that is no longer needed (.history files always stay)'
complete -c walship -n "__fish_walship_using_subcommand help; and not __fish_seen_subcommand_from push fetch list status restore-point prune help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
