# Part of asyncci's job wrapper (see job.sh, which it is sent ahead of): the files a
# finished job's `artifacts` and `junit` patterns name, put where the server fetches them.

collect() {
	# In the workspace, once nothing of the job runs: the files the patterns name go to
	# AC_JUNIT_DIR and AC_ARTIFACTS_DIR in $AC_DIR under their workspace paths, where the
	# server fetches them; reports first, so a big artifact never crowds them out of the cap.
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
	put "$AC_JUNIT_DIR" "${junit[@]}"
	put "$AC_ARTIFACTS_DIR" "${artifacts[@]}"
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
