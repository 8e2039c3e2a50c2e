#!/usr/bin/env bash
# release.sh — the release runbook, built on dbpromote.
#
#   scripts/release.sh VERSION
#
# Moves VERSION up the chain of environments (development → staging →
# production by default), one environment at a time. For each environment:
#
#   1. dbpromote releases the schema: a verified pre-release backup, a
#      rehearsal of the migration on a restored copy, the migration and the
#      health check, and the release manifest. It refuses (exit 4) a version
#      that has not succeeded on the environment below.
#   2. The application is deployed (hook), then its caches are warmed (hook).
#
# The database moves first, so migrations must keep the previous application
# version working (expand, then contract in a later release). The first
# failure stops the run with dbpromote's exit code; what is already promoted
# stays promoted, and `dbpromote --rollback --to ENV` undoes an environment.
#
# Environment:
#   DBSAFE_CONFIG     dbsafe config with [env.*] and [defaults] chain (dbpromote reads it)
#   DBSAFE_BIN_DIR    where dbpromote is (default: on PATH)
#   RELEASE_CHAIN     environments in order (default: development staging production)
#   RELEASE_YES=1     pass --yes to dbpromote (no typed confirmation; for CI)
#   RELEASE_DRY_RUN=1 print dbpromote's plans; run no hook, change nothing
#   RELEASE_HOOKS     a bash file that redefines the hook functions below
#   RELEASE_HOOK_LOG  append one line per hook call to this file
set -euo pipefail

readonly PROG=release.sh

die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 2
}

note() {
	printf '%s: %s\n' "$PROG" "$*" >&2
}

# --- Application-side hooks ---------------------------------------------
# Replace these for your application, here or in a RELEASE_HOOKS file. They
# only record that they ran, so the runbook can be rehearsed end to end.

hook_log() {
	note "hook: $*"
	if [[ -n ${RELEASE_HOOK_LOG:-} ]]; then
		printf '%s\n' "$*" >>"$RELEASE_HOOK_LOG"
	fi
}

# HOOK: build and push the application image tagged VERSION.
build_image() {
	local version=$1
	hook_log "build_image $version"
}

# HOOK: deploy VERSION of the application to ENV (e.g. point the ENV
# deployment at the image tag and wait for the rollout).
deploy_app() {
	local env=$1 version=$2
	hook_log "deploy_app $env $version"
}

# HOOK: warm ENV's caches after a deploy (e.g. request the hot pages).
warm_caches() {
	local env=$1
	hook_log "warm_caches $env"
}

# --- The runbook ----------------------------------------------------------

main() {
	[[ $# -eq 1 && -n $1 ]] || die "usage: $PROG VERSION"
	local version=$1
	if [[ -n ${RELEASE_HOOKS:-} ]]; then
		# shellcheck source=/dev/null
		source "$RELEASE_HOOKS"
	fi
	local dbpromote=dbpromote
	if [[ -n ${DBSAFE_BIN_DIR:-} ]]; then
		dbpromote=$DBSAFE_BIN_DIR/dbpromote
	fi
	command -v "$dbpromote" >/dev/null || die "dbpromote not found (set DBSAFE_BIN_DIR or PATH)"

	local -a chain flags=()
	read -r -a chain <<<"${RELEASE_CHAIN:-development staging production}"
	((${#chain[@]} >= 2)) || die "RELEASE_CHAIN needs at least two environments"
	if [[ ${RELEASE_YES:-0} == 1 ]]; then
		flags+=(--yes)
	fi
	local dry_run=0
	if [[ ${RELEASE_DRY_RUN:-0} == 1 ]]; then
		dry_run=1
		flags+=(--dry-run)
	fi

	if ((!dry_run)); then
		build_image "$version"
	fi
	local from=${chain[0]} to rc
	for to in "${chain[@]:1}"; do
		note "promoting $version: $from → $to"
		rc=0
		"$dbpromote" --from "$from" --to "$to" --version "$version" "${flags[@]}" || rc=$?
		if ((rc != 0)); then
			note "the promotion of $version to $to failed (exit $rc); stopping here"
			note "environments below $to keep $version; see: $dbpromote --history --to $to"
			exit "$rc"
		fi
		if ((!dry_run)); then
			deploy_app "$to" "$version"
			warm_caches "$to"
		fi
		from=$to
	done
	note "$version is released to ${chain[*]:1}"
}

main "$@"
