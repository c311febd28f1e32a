# asyncci's job wrapper: the same text runs on local and SSH hosts, read from stdin by
# `bash -c 'eval "$(cat)"'` after a preamble of shell-quoted AC_* assignments, so no job
# data (script, environment, secrets, branch names) ever appears on a command line.
#
# AC_MODE   start  check out AC_SHA, start the script detached, then stream its log
#           attach stream the log of a job already started, from byte AC_OFFSET
#           kill   SIGTERM the job's process group now, SIGKILL it AC_GRACE seconds later
# AC_ARTIFACTS and AC_JUNIT (start mode): glob patterns, one a line, naming what to collect
# from the workspace once the job ended, within AC_CAP bytes in all (see `collect`).
# Streams: stdout carries only the job's log bytes; the last line on stderr says how the
# job ended: `asyncci-exit N`, `asyncci-lost` (no exit status: the job's supervisor was
# killed) or `asyncci-error MESSAGE` (the job could not be started).
set -u
umask 077
cd -- "$AC_WORKDIR" 2>/dev/null || { mkdir -p -- "$AC_WORKDIR" && cd -- "$AC_WORKDIR"; } ||
	{ echo "asyncci-error workdir $AC_WORKDIR unusable" >&2; exit 3; }
jobdir="$PWD/jobs/$AC_JOB"

fail() {
	printf 'asyncci-error %s\n' "$*" >&2
	exit 3
}

fetch() {
	local mirror="$1"
	[ -d "$mirror" ] || git init -q --bare -- "$mirror" || return
	git -C "$mirror" cat-file -e "$AC_SHA^{commit}" 2>/dev/null && return
	if [ -n "$AC_REF" ]; then
		git -C "$mirror" fetch -q --no-tags --force -- "$AC_URL" "+$AC_REF:$AC_REF" && \
			git -C "$mirror" cat-file -e "$AC_SHA^{commit}" 2>/dev/null && return
	fi
	git -C "$mirror" fetch -q --no-tags -- "$AC_URL" "$AC_SHA" 2>/dev/null && return
	git -C "$mirror" fetch -q --no-tags --force -- "$AC_URL" '+refs/heads/*:refs/heads/*' || return
	git -C "$mirror" cat-file -e "$AC_SHA^{commit}" || return
}

checkout() {
	local mirror="$PWD/mirrors/$AC_REPO.git" ws="$1"
	if [ ! -d "$ws/.git" ]; then
		git init -q -- "$ws" && echo "$mirror/objects" >"$ws/.git/objects/info/alternates" || return
	fi
	# Usually the commit is there already: try before taking the mirror's lock.
	if ! git -C "$ws" checkout -q -f --detach "$AC_SHA" -- 2>/dev/null; then
		(flock 9 && fetch "$mirror") 9>"$mirror.lock" || return
		git -C "$ws" checkout -q -f --detach "$AC_SHA" -- || return
	fi
	git -C "$ws" clean -q -ffdx
}

forget_old_jobs() {
	# A job directory outlives its job only so the server can finish reading its log.
	find jobs -mindepth 2 -maxdepth 2 -name job.exit -mmin +1440 -printf '%h\0' 2>/dev/null |
		xargs -0 -r rm -rf --
}

start() {
	local ws="$PWD/ws/$AC_REPO/$AC_SLOT"
	((RANDOM % 64)) || forget_old_jobs
	[ ! -e "$jobdir/cancel" ] || fail "cancelled before it started"
	[ ! -e "$jobdir" ] || rm -rf -- "$jobdir"
	mkdir -p -- "$jobdir" mirrors "$ws" || fail "cannot create $jobdir"
	printf '%s' "$AC_ENV" >"$jobdir/env"
	printf '%s' "$AC_SCRIPT" >"$jobdir/script"
	# The supervisor is a session of its own from here on: a connection that drops (or a
	# server that stops) even during the checkout loses nothing. Functions and values
	# reach it through the environment, not its command line.
	export -f supervise checkout fetch collect gather put note
	export AC_WORKDIR AC_REPO AC_URL AC_SHA AC_REF AC_GRACE AC_DIR="$jobdir" AC_WS="$ws" \
		AC_ARTIFACTS AC_JUNIT AC_CAP
	setsid bash -c supervise </dev/null >/dev/null 2>&1 &
	# Not a process group leader, setsid(1) does not fork: $! is the supervisor.
	echo $! >"$jobdir/sup.pid"
	stream
}

supervise() {
	# The script gets a process group of its own, so killing it leaves the supervisor to
	# record the status; `env -i` keeps the server's own environment (tokens) from it.
	# What the script leaves running in its group is stopped before the job counts as
	# ended, so the slot's next job never meets it.
	local pgid status n=0
	cd -- "$AC_WORKDIR" || exit
	if ! checkout "$AC_WS" >"$AC_DIR/checkout.log" 2>&1; then
		printf 'checkout of %s failed: %s' "$AC_SHA" \
			"$(tail -c 1500 "$AC_DIR/checkout.log" | tr '\n' ' ')" >"$AC_DIR/job.error"
		return
	fi
	cd -- "$AC_WS" || exit
	env -i PATH="$PATH" HOME="$HOME" USER="${USER:-$(id -un)}" LANG="${LANG:-C.UTF-8}" \
		SHELL="${SHELL:-/bin/bash}" TERM=dumb \
		setsid bash -c 'set -a; . "$0/env"; set +a; rm -f -- "$0/env"; exec bash -eo pipefail "$0/script"' "$AC_DIR" \
		</dev/null >"$AC_DIR/job.log" 2>&1 &
	pgid=$!
	echo $pgid >"$AC_DIR/job.pid"
	# A kill that came before job.pid existed left this mark (see kill_job).
	[ ! -e "$AC_DIR/cancel" ] || kill -TERM -- "-$pgid" 2>/dev/null || kill -TERM "$pgid"
	wait $pgid
	status=$?
	if kill -TERM -- "-$pgid" 2>/dev/null; then
		while kill -0 -- "-$pgid" 2>/dev/null && [ $n -lt $((AC_GRACE * 10)) ]; do
			sleep 0.1
			n=$((n + 1))
		done
		kill -KILL -- "-$pgid" 2>/dev/null
	fi
	# Before job.exit: the stream, which ends with this process, carries collect's notes.
	[ -z "$AC_ARTIFACTS$AC_JUNIT" ] || collect
	echo $status >"$AC_DIR/job.exit"
}

collect() {
	# In the workspace, once nothing of the job runs: the files the patterns name go to
	# $AC_DIR/junit and $AC_DIR/artifacts under their workspace paths, where the server
	# fetches them; reports first, so a big artifact never crowds them out of the cap.
	# A handful of processes whatever the number of files, since hosts' forks may be slow.
	# Names only pass through quoted expansions and NUL-separated lists: data, never code.
	local -a names=() kinds=() real=() sizes=() junit=() artifacts=()
	local -A seen=() what=([junit]="junit report" [artifacts]=artifact)
	local IFS= ws left=$AC_CAP over=0 i
	cd -P . && ws=$PWD || return # real paths are compared with it
	shopt -s globstar nullglob
	shopt -s globskipdots 2>/dev/null # bash 5.2; before it `.*` matches `..`, refused anyway
	gather junit "$AC_JUNIT" && gather artifacts "$AC_ARTIFACTS" || return
	((${#names[@]})) || return
	mapfile -d '' real < <(printf '%s\0' "${names[@]}" | xargs -0 realpath -zm --)
	mapfile -d '' sizes < <(printf '%s\0' "${names[@]}" |
		xargs -0 stat -L --printf '%s\0' -- 2>/dev/null)
	if ((${#real[@]} != ${#names[@]} || ${#sizes[@]} != ${#names[@]})); then
		note "nothing collected: files changed while they were being collected"
		return
	fi
	for i in "${!names[@]}"; do
		if [[ ${real[i]} != "$ws"/* ]]; then
			note "${what[${kinds[i]}]} \"${names[i]}\" refused: it leaves the workspace"
		elif ((sizes[i] > left)); then
			((over++ >= 10)) ||
				note "${what[${kinds[i]}]} \"${names[i]}\" skipped: over the cap of $AC_CAP bytes"
		elif [ "${kinds[i]}" = junit ]; then
			junit+=("${names[i]}")
			left=$((left - sizes[i]))
		else
			artifacts+=("${names[i]}")
			left=$((left - sizes[i]))
		fi
	done
	((over <= 10)) || note "$((over - 10)) more files skipped: over the cap of $AC_CAP bytes"
	put junit "${junit[@]}"
	put artifacts "${artifacts[@]}"
}

gather() {
	# KIND PATTERNS: add the regular files each pattern names (for a directory, every file
	# under it) to collect's `names` and `kinds`, once each; note what a pattern cannot have.
	local kind=$1 pattern m f found where
	local -a files
	while read -r pattern; do
		[ -n "$pattern" ] || continue
		while [[ $pattern == ./* ]]; do pattern=${pattern#./}; done
		if [[ $pattern == /* || /$pattern/ == */../* ]]; then
			note "${what[$kind]} \"$pattern\" refused: it leaves the workspace"
			continue
		fi
		found=0
		for m in $pattern; do # IFS is empty: pathname expansion only, no word splitting
			[[ -e $m || -L $m ]] || continue # a pattern without wildcards stays as it is
			found=1
			files=()
			if [[ -d $m ]]; then
				# Where the directory really is, without a process: a link out is not walked.
				where=
				cd -P -- "./$m" 2>/dev/null && where=$PWD
				cd -- "$ws" || return
				if [[ $where != "$ws" && $where != "$ws"/* ]]; then
					note "${what[$kind]} \"$m\" refused: it leaves the workspace"
				else
					shopt -s dotglob # a directory named whole: its hidden files too
					files=("${m%/}"/**)
					shopt -u dotglob
				fi
			elif [[ -f $m ]]; then
				files=("$m")
			else
				note "${what[$kind]} \"$m\" skipped: not a regular file"
			fi
			for f in "${files[@]}"; do
				[[ -f $f && -z ${seen[$kind/$f]-} ]] || continue
				seen[$kind/$f]=1
				names+=("$f")
				kinds+=("$kind")
			done
		done
		((found)) || note "${what[$kind]} \"$pattern\" matched no files"
	done <<<"$2"
}

put() {
	# DIR NAME...: hard links, which cost nothing however big the file; copies where the
	# file system refuses them (another device, a file owned by someone else).
	local dest=$AC_DIR/$1 err
	shift
	(($#)) && mkdir -p -- "$dest" || return
	printf '%s\0' "$@" | xargs -0 cp -L -l --parents -t "$dest" -- 2>/dev/null && return
	rm -rf -- "$dest" && mkdir -p -- "$dest" || return
	err=$(printf '%s\0' "$@" | xargs -0 cp -L --parents -t "$dest" -- 2>&1) ||
		note "not everything could be copied: ${err//$'\n'/; }"
}

note() {
	# A line of asyncci's own in the job's log: on a line of its own, and one line however
	# a file is named.
	if [ -z "${noted-}" ]; then
		noted=1
		[ ! -s "$AC_DIR/job.log" ] || [ -z "$(tail -c 1 -- "$AC_DIR/job.log")" ] ||
			echo >>"$AC_DIR/job.log"
	fi
	printf '[asyncci] %s\n' "${1//$'\n'/\\n}" >>"$AC_DIR/job.log"
}

stream() {
	local sup status
	[ -s "$jobdir/sup.pid" ] || { echo asyncci-lost >&2; exit 0; }
	read -r sup <"$jobdir/sup.pid"
	if kill -0 "$sup" 2>/dev/null; then
		tail -c "+$((AC_OFFSET + 1))" -s 0.02 -F --pid="$sup" -- "$jobdir/job.log" 2>/dev/null
	else
		tail -c "+$((AC_OFFSET + 1))" -- "$jobdir/job.log" 2>/dev/null
	fi
	if [ -s "$jobdir/job.exit" ]; then
		read -r status <"$jobdir/job.exit"
		printf 'asyncci-exit %s\n' "$status" >&2
	elif [ -s "$jobdir/job.error" ]; then
		printf 'asyncci-error %s\n' "$(cat -- "$jobdir/job.error")" >&2
	else
		echo asyncci-lost >&2
	fi
}

kill_job() {
	local pid
	# An attempt that ended is left alone: its pid may belong to someone else by now.
	[ ! -e "$jobdir/job.exit" ] || exit 0
	# Mark first, then look for the pid: the supervisor writes the pid, then looks for the
	# mark, so one of the two always sees the other, however they interleave.
	mkdir -p -- "$jobdir" && : >"$jobdir/cancel"
	[ -s "$jobdir/job.pid" ] || exit 0
	read -r pid <"$jobdir/job.pid"
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || exit 0
	# The SIGKILL comes from a process of its own: nobody waits for the grace period, and
	# it happens even if the connection or the server goes away meanwhile.
	setsid bash -c 'n=0
		while kill -0 -- "-$0" 2>/dev/null && [ $n -lt $(($1 * 10)) ]; do sleep 0.1; n=$((n + 1)); done
		kill -KILL -- "-$0" 2>/dev/null' "$pid" "$AC_GRACE" </dev/null >/dev/null 2>&1 &
	exit 0
}

case "$AC_MODE" in
start) start ;;
attach) stream ;;
kill) kill_job ;;
*) fail "unknown mode $AC_MODE" ;;
esac
