# asyncci's job wrapper: the same text runs on local and SSH hosts, read from stdin by
# `bash -c 'LC_ALL=C read -rN "$0" w && eval "$w"' N` (hosts/wrapper.py's READ_WRAPPER)
# after a preamble of shell-quoted AC_* assignments, so no job data (script, environment,
# secrets, branch names) ever appears on a command line. It starts as few processes as it
# can: each costs a host with a slow bash or sshd milliseconds of CPU, so builtins do what
# they can (bench/job_processes.py counts them).
# checkout.sh and collect.sh hold some of its functions and come first in that text.
# Every path comes in the preamble, relative to AC_WORKDIR (wrapper.py decides them all):
# AC_WS the workspace, AC_DIR the attempt's directory, AC_MIRROR the repo's mirror.
#
# AC_MODE   start  check out AC_SHA into AC_WS, start the script detached, stream its log
#           attach stream the log of a job already started, from byte AC_OFFSET
#           kill   SIGTERM the job's process group now, SIGKILL it AC_GRACE tenths of a
#                  second later
#           reap   the same, and return only once the group is gone: an attempt given up
#                  on must be over before its slot's workspace takes the next job
#           probe  print git's and bash's versions, then what the host can confine with;
#                  with AC_JOBS, first remove the attempts' directories there long over
# AC_ARTIFACTS and AC_JUNIT (start mode): glob patterns, one a line, naming what to collect
# from the workspace once the job ended, within AC_CAP bytes in all (see collect.sh).
# AC_CONFINE (start mode): "" runs the script as the build user; "sandbox" in bubblewrap;
# "container" in a fresh container of AC_IMAGE run by the words of AC_ENGINE (SPEC §5a).
# AC_FRESH=1: the workspace is the job's own (an untrusted job's), removed after it.
# Streams: stdout carries only the job's log bytes; the last line on stderr says how the
# job ended: `asyncci-exit N`, `asyncci-lost` (no exit status: the job's supervisor was
# killed) or `asyncci-error MESSAGE` (the job could not be started). After an exit or an
# error, the wrapper waits for the server's `forget` on stdin, which says the server has
# the whole log: only then does the host's unmasked copy go.
set -u
umask 077
cd -- "$AC_WORKDIR" 2>/dev/null || { mkdir -p -- "$AC_WORKDIR" && cd -- "$AC_WORKDIR"; } ||
	{ echo "asyncci-error workdir $AC_WORKDIR unusable" >&2; exit 3; }
# The workdir may itself be relative to the home: paths are absolute from here on, as the
# sandbox's mounts need them.
AC_WORKDIR=$PWD AC_WS=$PWD/$AC_WS AC_MIRROR=$PWD/$AC_MIRROR AC_DIR=$PWD/$AC_DIR

lines() {
	# NAME TEXT: the array NAME gets TEXT's lines, none for an empty TEXT; no word
	# splitting or globbing on the way, whatever the values hold.
	local -n into=$1
	into=()
	[ -z "$2" ] || mapfile -t into <<<"$2"
}

fail() {
	printf 'asyncci-error %s\n' "$*" >&2
	exit 3
}

g() {
	# asyncci's own git: hooks never run, wherever a job may have put them.
	git -c core.hooksPath=/dev/null "$@"
}

forget_old_jobs() {
	# A job directory outlives its job only so the server can finish reading its log.
	find "$AC_JOBS" -mindepth 2 -maxdepth 2 -name job.exit -mmin +1440 -printf '%h\0' \
		2>/dev/null | xargs -0 -r rm -rf --
}

start() {
	[ ! -e "$AC_DIR/cancel" ] || fail "cancelled before it started"
	[ ! -e "$AC_DIR" ] || rm -rf -- "$AC_DIR"
	mkdir -p -- "$AC_DIR" "$AC_WS" "${AC_MIRROR%/*}" || fail "cannot create $AC_DIR"
	printf '%s' "$AC_SCRIPT" >"$AC_DIR/script"
	# There before tail looks: tail polls a file that is missing when it starts.
	: >"$AC_DIR/job.log"
	# The supervisor is a process group of its own from here on (job control makes one):
	# a connection that drops (or a server that stops) even during the checkout loses
	# nothing. It is this shell, forked: no program to start, nothing on a command line.
	set -m
	supervise </dev/null >/dev/null 2>&1 &
	set +m
	echo $! >"$AC_DIR/sup.pid"
	stream $!
}

supervise() {
	# The script gets a process group of its own, so killing it leaves the supervisor to
	# record the status. What the script leaves running in its group is stopped before
	# the job counts as ended, so the slot's next job never meets it; a confined job's
	# PID namespace goes with its script, and with it whatever the job started, `setsid`
	# or not.
	local pgid status script="$AC_DIR/script"
	local -a jail=() engine
	lines engine "$AC_ENGINE"
	if ! checkout >"$AC_DIR/checkout.log" 2>&1; then
		printf 'checkout of %s failed: %s' "$AC_SHA" \
			"$(tail -c 1500 "$AC_DIR/checkout.log" | tr '\n' ' ')" >"$AC_DIR/job.error"
		return
	fi
	cd -- "$AC_WS" || exit
	[ -z "$AC_CONFINE" ] || confine
	set -m
	launch </dev/null >"$AC_DIR/job.log" 2>&1 &
	pgid=$!
	set +m
	echo $pgid >"$AC_DIR/job.pid"
	# A kill that came before job.pid existed left this mark (see kill_job).
	[ ! -e "$AC_DIR/cancel" ] || kill -TERM -- "-$pgid" 2>/dev/null || kill -TERM "$pgid"
	wait $pgid
	status=$?
	# A sandbox's PID namespace ended with its script, killing all it held; what is left
	# in the group is its init, dead, until the host's init reaps it: not worth a wait.
	[ "$AC_CONFINE" = sandbox ] || stop_group "$pgid"
	# The engine's `run` is not the container: one killed (a timeout, a cancel) or
	# failing itself (125 and over) may leave it behind.
	[ "$AC_CONFINE" != container ] || { [ ! -e "$AC_DIR/cancel" ] && ((status < 125)); } ||
		"${engine[@]}" rm -f -- "asyncci-$AC_JOB" >/dev/null 2>&1
	# Before job.exit: the stream, which ends with this process, carries collect's notes.
	[ -z "$AC_ARTIFACTS$AC_JUNIT" ] || collect
	# A job may leave directories it cannot list (chmod 000): opened up before they go.
	[ -z "$AC_FRESH" ] || rm -rf -- "$AC_WS" 2>/dev/null ||
		{ chmod -R u+rwX -- "$AC_WS" && rm -rf -- "$AC_WS"; }
	echo $status >"$AC_DIR/job.exit"
}

launch() {
	# The script's process. Its environment holds only what a job is given: nothing the
	# host's own held (a local host's is the server's, tokens and all) reaches it. The
	# job's variables come from memory (no file holds them), each as AC_V_NAME, and a
	# shell of their own names them NAME, in the jail when there is one: none of them
	# (PATH, LD_PRELOAD, CONTAINERS_CONF, a name this shell uses) reaches the program that
	# confines the job or changes what it runs.
	local -a names functions
	local user='\u' # a prompt's escape: the user's name without `id -un`
	compgen -e >"$AC_DIR/exported" && mapfile -t names <"$AC_DIR/exported" &&
		compgen -A function >"$AC_DIR/exported" && mapfile -t functions <"$AC_DIR/exported" ||
		exit
	((!${#names[@]})) || export -n "${names[@]}" 2>/dev/null
	export -nf "${functions[@]}"
	export PATH HOME USER="${USER:-${user@P}}" LANG="${LANG:-C.UTF-8}" \
		SHELL="${SHELL:-/bin/bash}" TERM=dumb "${!AC_V_@}"
	# shellcheck disable=SC2016 # expanded by that shell
	exec "${jail[@]}" bash -c 'set -- "$BASH" -eo pipefail "$0"
		for AC_V_ in "${!AC_V_@}"; do export "${AC_V_#AC_V_}=${!AC_V_}"; unset "$AC_V_"; done
		unset AC_V_; exec "$@"' "$script"
}

confine() {
	# Sets the supervisor's `jail` (the words the script runs under) and `script` (its
	# path in there); paths only, never the environment, reach the command line.
	local p
	local -a options devices hidden
	lines options "$AC_ENGINE_OPTIONS"
	lines devices "$AC_DEVICES"
	lines hidden "$AC_HIDE"
	if [ "$AC_CONFINE" = container ]; then
		# Names only: the engine takes each value from its own environment, so a value
		# may hold anything, a newline too, and none is written to a file.
		printf '%s\n' "${!AC_V_@}" TERM LANG >"$AC_DIR/env.names"
		script=/.asyncci-script
		jail=("${engine[@]}" run --rm --init --name "asyncci-$AC_JOB" "${options[@]}"
			--env-file "$AC_DIR/env.names" -v "$AC_WS:$AC_WS" -w "$AC_WS"
			-v "$AC_MIRROR/objects:$AC_MIRROR/objects:ro" -v "$AC_DIR/script:$script:ro")
		[ -n "$AC_NETWORK" ] || jail+=(--network none)
		for p in "${devices[@]}"; do jail+=(--device "$p"); done
		jail+=(-- "$AC_IMAGE") # never an option of the engine's, whatever the image says
		return
	fi
	# The host read-only; its workdir, the build user's home, /tmp, /var/tmp, /run (the
	# user's sockets: a session bus, an engine's) and the server's own files hidden; then
	# the workspace (writable) and the repo's objects (so git log works) back.
	script=/tmp/.asyncci-script
	jail=(bwrap --die-with-parent --unshare-pid --unshare-ipc --cap-drop ALL
		--ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --tmpfs "$HOME" --tmpfs "$AC_WORKDIR"
		--tmpfs /var/tmp --tmpfs /run --ro-bind-try /run/systemd/resolve /run/systemd/resolve)
	for p in "${hidden[@]}"; do
		if [[ -d $p ]]; then
			jail+=(--tmpfs "$p")
		elif [[ -e $p ]]; then
			jail+=(--ro-bind /dev/null "$p")
		fi
	done
	jail+=(--bind "$AC_WS" "$AC_WS" --ro-bind "$AC_MIRROR/objects" "$AC_MIRROR/objects"
		--ro-bind "$AC_DIR/script" "$script" --chdir "$AC_WS")
	[ -n "$AC_NETWORK" ] || jail+=(--unshare-net)
	jail+=(--)
}

stream() {
	# [SUP]: stream job.log from byte AC_OFFSET until the job ended, then say how it did.
	# Given SUP, the supervisor this shell started, this shell wakes tail once it reaped
	# it (a new file in the job's directory): no polling. Reattached, tail looks for it
	# every 0.1 s.
	local sup=${1-} tail status ack
	if [ -z "$sup" ]; then
		[ -s "$AC_DIR/sup.pid" ] || { echo asyncci-lost >&2; exit 0; }
		read -r sup <"$AC_DIR/sup.pid"
		if kill -0 "$sup" 2>/dev/null; then
			tail -c "+$((AC_OFFSET + 1))" -s 0.1 -F --pid="$sup" -- "$AC_DIR/job.log" 2>/dev/null
		else
			tail -c "+$((AC_OFFSET + 1))" -- "$AC_DIR/job.log" 2>/dev/null
		fi
	else
		# -s 1: only where inotify is missing does tail poll; then at least every second.
		tail -c "+$((AC_OFFSET + 1))" -s 1 -F --pid="$sup" -- "$AC_DIR/job.log" 2>/dev/null &
		tail=$!
		wait "$sup"
		: >"$AC_DIR/ended"
		# A stream cut meanwhile (the server went away, tail was killed) told nothing.
		wait "$tail" || (($? < 128)) || { echo asyncci-lost >&2; return; }
	fi
	if [ -s "$AC_DIR/job.exit" ]; then
		read -r status <"$AC_DIR/job.exit"
		printf 'asyncci-exit %s\n' "$status" >&2
	elif [ -s "$AC_DIR/job.error" ]; then
		IFS= read -r -d '' status <"$AC_DIR/job.error"
		printf 'asyncci-error %s\n' "$status" >&2
	else
		echo asyncci-lost >&2
		return
	fi
	exec >&- 2>&- # the server's end of the stream, and the end of its wait for how it ended
	# Emptied rather than removed: a builtin does that, removing takes a process.
	read -r ack && [ "$ack" = forget ] && : >"$AC_DIR/job.log"
}

stop_group() {
	# PGID: SIGTERM the process group, then SIGKILL what is left of it once AC_GRACE tenths
	# of a second passed. The one way asyncci stops a group of processes.
	local n=0
	kill -TERM -- "-$1" 2>/dev/null || return 0
	while kill -0 -- "-$1" 2>/dev/null; do
		((n++ < AC_GRACE)) || { kill -KILL -- "-$1" 2>/dev/null; return 0; }
		sleep 0.1
	done
}

kill_job() {
	local pid n=0
	# An attempt that ended is left alone: its pid may belong to someone else by now.
	[ ! -e "$AC_DIR/job.exit" ] || exit 0
	# Mark first, then look for the pid: the supervisor writes the pid, then looks for the
	# mark, so one of the two always sees the other, however they interleave.
	mkdir -p -- "$AC_DIR" && : >"$AC_DIR/cancel" || exit 3
	[ -s "$AC_DIR/job.pid" ] || exit 0
	read -r pid <"$AC_DIR/job.pid"
	# The script's group exists from its fork (job control): one that is gone has nothing
	# left to stop, and its pid may be someone else's by now.
	kill -0 -- "-$pid" 2>/dev/null || exit 0
	if [ "$AC_MODE" = kill ]; then
		# In a process of its own: nobody waits for the grace period, and the SIGKILL
		# comes even if the connection or the server goes away meanwhile.
		export -f stop_group
		export AC_GRACE
		setsid bash -c 'stop_group "$0"' "$pid" </dev/null >/dev/null 2>&1 &
		exit 0
	fi
	stop_group "$pid"
	while kill -0 -- "-$pid" 2>/dev/null; do
		[ $n -lt 50 ] || exit 4  # unkillable (a process stuck in the kernel): try again later
		sleep 0.1
		n=$((n + 1))
	done
	exit 0
}

probe() {
	local -a engine
	local version
	[ -z "$AC_JOBS" ] || forget_old_jobs
	lines engine "$AC_ENGINE"
	version=$(git --version 2>/dev/null) || { echo "git is missing"; exit 1; }
	# GIT_CONFIG_COUNT, which carries a repo's URL past the command line, came in 2.31.
	[[ $version =~ ([0-9]+)\.([0-9]+) ]] &&
		((BASH_REMATCH[1] > 2 || (BASH_REMATCH[1] == 2 && BASH_REMATCH[2] >= 31))) ||
		{ echo "$version is too old: asyncci needs git 2.31 or newer"; exit 1; }
	printf '%s; bash %s\n' "$version" "${BASH_VERSION%%(*}"
	! command -v bwrap >/dev/null ||
		! bwrap --ro-bind / / --dev /dev --proc /proc --unshare-pid --cap-drop ALL true 2>/dev/null ||
		echo "sandbox $(bwrap --version)"
	! "${engine[@]}" version >/dev/null 2>&1 || echo "container $("${engine[@]}" --version)"
}

case "$AC_MODE" in
start) start ;;
attach) stream ;;
kill | reap) kill_job ;;
probe) probe ;;
*) fail "unknown mode $AC_MODE" ;;
esac
