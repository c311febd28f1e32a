# Part of asyncci's job wrapper (see job.sh, which it is sent ahead of): the slot's
# workspace at the job's commit, fresh for every job, and the host's mirror of the repo.

fetch() {
	local mirror="$AC_MIRROR"
	# The URL may hold a token: git gets it as the remote `origin` from its environment,
	# which only the build user can read, and not on its command line, which `ps` shows
	# every user. Exported for this function's git calls only, never to the job's script.
	local -x GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=remote.origin.url GIT_CONFIG_VALUE_0="$AC_URL"
	[ -d "$mirror" ] || g init -q --bare -- "$mirror" || return
	g -C "$mirror" cat-file -e "$AC_SHA^{commit}" 2>/dev/null && return
	if [ -n "$AC_REF" ]; then
		g -C "$mirror" fetch -q --no-tags --force -- origin "+$AC_REF:$AC_REF" && \
			g -C "$mirror" cat-file -e "$AC_SHA^{commit}" 2>/dev/null && return
	fi
	g -C "$mirror" fetch -q --no-tags -- origin "$AC_SHA" 2>/dev/null && return
	g -C "$mirror" fetch -q --no-tags --force -- origin '+refs/heads/*:refs/heads/*' || return
	g -C "$mirror" cat-file -e "$AC_SHA^{commit}" || return
}

checkout() {
	# The workspace is fresh for every job: at AC_SHA, nothing else in it, and git metadata
	# that holds nothing a job put there (hooks, a config with filters or an fsmonitor,
	# info/attributes, a `.git` file that points elsewhere), for asyncci's git runs there.
	# The metadata the slot's last checkout left is kept where it provably still is
	# (`intact`), and nothing is done at all when the files are too (`unchanged`). An
	# untrusted job never gets a workspace another job used.
	local ws=$AC_WS meta=$AC_WS/.git print
	if [ -n "$AC_FRESH" ] || ! intact; then
		renew || return
	elif unchanged; then
		return
	fi
	# Usually the commit is there already: try before taking the mirror's lock.
	if ! g -C "$ws" checkout -q -f --detach "$AC_SHA" -- 2>/dev/null; then
		(flock 9 && fetch) 9>"$AC_MIRROR.lock" || return
		g -C "$ws" checkout -q -f --detach "$AC_SHA" -- || return
	fi
	g -C "$ws" clean -q -ffdx || return
	[ -z "$AC_FRESH" ] || return 0
	# The state `intact` looks for: the index itself (git replaces the file whenever it
	# changes it), and what the metadata holds.
	{ [[ $meta/index -ef $ws.index ]] || ln -f -- "$meta/index" "$ws.index"; } &&
		fingerprint && printf '%s' "$print" >"$ws.git"
}

renew() {
	# New metadata around the workspace's files; only the index is kept, so that
	# unchanged files are not written again.
	if [[ -d $meta && ! -L $meta && -f $meta/index && ! -L $meta/index &&
		! $meta/index -ef $ws.index ]]; then
		mv -f -- "$meta/index" "$ws.index" || return
	fi
	[[ ! -e $meta && ! -L $meta ]] || rm -rf -- "$meta" || return
	g init -q --template= -- "$ws" && echo "$AC_MIRROR/objects" >"$meta/objects/info/alternates" ||
		return
	[ ! -e "$ws.index" ] || mv -f -- "$ws.index" "$meta/index"
}

intact() {
	# The metadata is as the last checkout left it: every path, type and config line the
	# same. Builtins only: no git runs in the workspace before this vouches for what it
	# would read there.
	local saved
	[[ -d $meta && ! -L $meta && -f $ws.git ]] || return
	IFS= read -r -d '' saved <"$ws.git"
	fingerprint && [ "$print" = "$saved" ]
}

fingerprint() {
	# Sets `print`: each path under the metadata with its type, then the lines of its
	# config and of its alternates (read as data: NUL bytes cannot hide a line from this).
	local p
	local -a text
	print=
	shopt -s globstar dotglob nullglob
	for p in "$meta"/**; do
		if [[ -L $p ]]; then
			print+="l ${p#"$meta"}"$'\n'
		elif [[ -d $p ]]; then
			print+="d ${p#"$meta"}"$'\n'
		else
			print+="f ${p#"$meta"}"$'\n'
		fi
	done
	shopt -u globstar dotglob nullglob
	mapfile -t text <"$meta/config" && printf -v p '%s\n' "${text[@]}" && print+=$p || return
	mapfile -t text <"$meta/objects/info/alternates" && printf -v p '%s\n' "${text[@]}" &&
		print+=$p
}

unchanged() {
	# HEAD at AC_SHA; the index the very file the last checkout wrote (git replaces the
	# file whenever it changes it), not written to since: it holds AC_SHA's tree; and
	# git, reading only metadata vouched for, finds no file changed, gone or added since
	# (an ignored file, an empty directory).
	local head
	[[ -f $ws.index && $meta/index -ef $ws.index && ! $meta/index -nt $ws.git &&
		! -L $meta/HEAD ]] && read -r head <"$meta/HEAD" && [ "$head" = "$AC_SHA" ] &&
		g -C "$ws" ls-files --others --modified --deleted --directory >"$AC_DIR/changed" &&
		[ ! -s "$AC_DIR/changed" ]
}
