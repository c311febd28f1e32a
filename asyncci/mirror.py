"""The server's bare mirror of each repo, and the one funnel for every git command it runs.

Refs come from outside (webhooks, remotes, the API), so every call puts `--` before them
and shas are checked to be hex before they reach git. A repo's URL may hold a token
(`https://bot:TOKEN@host/x.git`): it never reaches a command line, which `ps` shows every
user, nor an error message. A failing command raises `GitError` with git's own words.
Builds never run here: hosts check out their own copies.

Objects (a commit's message and author, a file at a commit) are read through one
long-lived `git cat-file --batch` per mirror, a line asked and an answer read, and refs
from a list made once per fetch, rather than a process per question: a process costs
the server ~0.9 ms of CPU to fork (holding the event loop) and reap, and git ~1.3 ms to
start; four per build held enqueueing under 120 builds/s (bench/enqueue.py).
"""

from __future__ import annotations

import asyncio
import codecs
import os
import re
from pathlib import Path

from .config import redact_credentials
from .refs import HEADS, Commit, branch_of, full_ref

SHA_RE = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")
# `--batch`'s answer for an object it has; anything else ends in " missing" (or "ambiguous").
_FOUND_RE = re.compile(rb"[0-9a-f]{40}(?:[0-9a-f]{24})? ([a-z]+) ([0-9]+)\n")
READ_TIMEOUT_S = 30.0
# A bigger object is cut to this many bytes and one more: whoever reads it can tell it is
# too big (the pipeline file's own cap is far below), and no commit makes the server hold more.
MAX_OBJECT_BYTES = 16 << 20
_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",  # never wait for a password nobody will type
    "GIT_ASKPASS": "true",
    "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
    "LC_ALL": "C",
}


class GitError(Exception):
    pass


def is_sha(value: str) -> bool:
    return SHA_RE.fullmatch(value) is not None


async def git(*args: str, cwd: Path | None = None, timeout: float = 300,
              url: str | None = None) -> bytes:
    """Run git; stdout on success, GitError with stderr's last lines otherwise. `url` is
    the remote `origin`, given in the environment (which only its owner and root can read)
    rather than in the mirror's config or on the command line."""
    remote = {} if url is None else {
        "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "remote.origin.url", "GIT_CONFIG_VALUE_0": url,
    }
    proc = await asyncio.create_subprocess_exec(
        "git", *args, cwd=cwd, env={**os.environ, **_GIT_ENV, **remote},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        raise GitError(f"git {args[0]}: timed out after {timeout:.0f}s") from None
    finally:
        if proc.returncode is None:  # timed out or cancelled: leave no git behind
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        lines = [x.strip() for x in err.decode(errors="replace").splitlines() if x.strip()]
        # git's own "fatal:"/"error:" lines say what is wrong; hints around them don't.
        message = [x for x in lines if x.startswith(("fatal:", "error:"))][:2] or lines[-3:]
        text = " ".join(message) or f"exit {proc.returncode}"
        raise GitError(f"git {args[0]}: " + (redact_credentials(text, url) if url else text))
    return out


class _Died(Exception):
    """The batch process ended, or answered out of step: start another."""


class ObjectReader:
    """One `git cat-file --batch` over a mirror's lifetime, asked one object at a time.

    It finds objects fetched after it started (git looks for new packs when an object is
    missing). A request that takes longer than `timeout`, or is cancelled half-answered,
    kills the process, since its answer could come later and be read as the next one's;
    a process found dead is replaced, and the request asked again once."""

    def __init__(self, path: Path, timeout: float = READ_TIMEOUT_S) -> None:
        self.path = path
        self.timeout = timeout
        self.proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def read(self, name: str) -> tuple[str, bytes] | None:
        """(type, contents) of the object `name` (`SHA`, `SHA^{commit}`, `SHA:PATH`), or
        None when the mirror has none. A name is one line on git's stdin, never an option."""
        if "\n" in name or "\0" in name:
            raise GitError(f"not an object name: {name!r}")
        async with self._lock:
            try:
                try:
                    return await asyncio.wait_for(self._ask(name), self.timeout)
                except _Died:
                    await self._stop()
                    return await asyncio.wait_for(self._ask(name), self.timeout)
            except TimeoutError:
                await self._stop()
                raise GitError(f"git cat-file: timed out after {self.timeout:g}s") from None
            except _Died as e:
                await self._stop()
                raise GitError(f"git cat-file: {e}") from None
            except BaseException:
                await self._stop()
                raise

    async def _ask(self, name: str) -> tuple[str, bytes] | None:
        proc = await self._started()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(name.encode() + b"\n")
            await proc.stdin.drain()
            header = await proc.stdout.readline()
            if not header.endswith(b"\n"):
                raise _Died(f"exited {await proc.wait()}")
            if (found := _FOUND_RE.fullmatch(header)) is None:
                return None
            size = int(found[2])
            data = await proc.stdout.readexactly(min(size, MAX_OBJECT_BYTES + 1))
            if size > MAX_OBJECT_BYTES:  # the rest is never read: this process is done
                await self._stop()
            elif await proc.stdout.readexactly(1) != b"\n":
                raise _Died("answered out of step")
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as e:
            raise _Died(str(e) or type(e).__name__) from None
        return found[1].decode(), data

    async def _started(self) -> asyncio.subprocess.Process:
        if self._closed:
            raise GitError("git cat-file: the mirror is closed")
        if self.proc is None or self.proc.returncode is not None:
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    "git", "cat-file", "--batch", cwd=self.path,
                    env={**os.environ, **_GIT_ENV}, stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                )
            except OSError as e:
                raise GitError(f"git cat-file: {e}") from None
        return self.proc

    async def _stop(self) -> None:
        if (proc := self.proc) is not None:
            self.proc = None
            if proc.returncode is None:
                proc.kill()
            await proc.wait()

    async def close(self) -> None:
        """Stop the process now, whatever it is answering: a stop does not wait for it."""
        self._closed = True
        await self._stop()


def parse_commit(sha: str, raw: bytes) -> Commit:
    """A commit object's author (`Name <email>`) and message, as `git show -s
    --format='%an <%ae>%x00%B'` prints them: re-encoded from the commit's `encoding`."""
    head, _, message = raw.partition(b"\n\n")
    author, encoding = b"", "utf-8"
    for line in head.split(b"\n"):  # a multi-line header's other lines start with a space
        key, _, value = line.partition(b" ")
        if key == b"author":
            author = value
        elif key == b"encoding":
            encoding = value.decode("ascii", errors="replace")
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        codec = "utf-8"
    name, _, rest = author.partition(b"<")
    ident = name.strip() + b" <" + rest.partition(b">")[0] + b">"
    return Commit(sha, message.decode(codec, errors="replace").strip(),
                  ident.decode(codec, errors="replace"))


class Mirror:
    """A bare mirror of one repo's branches (and pull-request heads, once fetched)."""

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.url = url
        self._lock = asyncio.Lock()
        self.objects = ObjectReader(path)
        # Commits never change: a trigger storm on one sha costs one read.
        self._commits: dict[str, Commit] = {}
        # Every ref and the commit it names, listed once after a fetch: nothing else
        # changes them, and a build asked for by ref then costs no process.
        self._refs: dict[str, str] | None = None
        self._fetches = 0
        self._listing = asyncio.Lock()  # a burst of requests after a fetch lists them once

    async def close(self) -> None:
        await self.objects.close()

    async def ls_remote(self) -> dict[str, str]:
        """Branch heads of the remote: {"refs/heads/main": sha}. Run in the mirror, whose
        config names no remote: anywhere else, an `origin` of the repository git finds
        around its working directory would come before the one it is given."""
        async with self._lock:
            await self._init()
        out = await git("ls-remote", "--heads", "--", "origin", cwd=self.path, timeout=120,
                        url=self.url)
        heads = {}
        for line in out.decode(errors="replace").splitlines():
            sha, _, ref = line.partition("\t")
            if is_sha(sha) and branch_of(ref) is not None:
                heads[ref] = sha
        return heads

    async def fetch(self, *refs: str) -> None:
        """Fetch branches (or the given refs) into the mirror; serialised per mirror."""
        specs = [f"+{ref}:{ref}" for ref in refs] or [f"+{HEADS}*:{HEADS}*"]
        async with self._lock:
            try:
                await self._init()
                await git("fetch", "--quiet", "--no-tags", "--prune", "--", "origin", *specs,
                          cwd=self.path, url=self.url)
            finally:  # even a failed fetch may have moved some refs
                self._refs, self._fetches = None, self._fetches + 1

    async def _init(self) -> None:
        if not (self.path / "HEAD").exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            await git("init", "--quiet", "--bare", "--", str(self.path))

    async def has(self, sha: str) -> bool:
        """Whether the mirror holds the commit; it is read (and kept) while at it, as
        whoever asks goes on to want its message."""
        try:
            await self.commit(sha)
        except GitError:
            return False
        return True

    async def ensure(self, sha: str, ref: str | None = None) -> None:
        """Make sure the mirror has `sha`, fetching `ref` (or every branch) if not."""
        if not await self.has(sha):
            await self.fetch(*([ref] if ref else []))
            if not await self.has(sha):
                raise GitError(redact_credentials(f"commit {sha} not found in {self.url}",
                                                  self.url))

    async def commit(self, sha: str) -> Commit:
        if (known := self._commits.get(sha)) is not None:
            return known
        found = await self.objects.read(f"{_checked(sha)}^{{commit}}")
        if found is None:
            raise GitError(f"git cat-file: bad object {sha}")
        if len(self._commits) >= 4096:
            self._commits.clear()
        commit = self._commits[sha] = parse_commit(sha, found[1])
        return commit

    async def resolve(self, ref: str) -> str:
        """The commit a branch name or full ref points at in the mirror. The name is only
        looked up in the mirror's list of refs: it never reaches git."""
        full = full_ref(ref)
        if (sha := (await self._ref_list()).get(full)) is None:
            raise GitError(f"{full} names no commit in the mirror")
        return sha

    async def branches_at(self, sha: str) -> list[str]:
        """The mirror's branches whose head is `sha`, from its list of refs: no process."""
        return [branch for ref, head in (await self._ref_list()).items()
                if head == sha and (branch := branch_of(ref)) is not None]

    async def _ref_list(self) -> dict[str, str]:
        async with self._listing:
            if (refs := self._refs) is None:
                fetches = self._fetches
                refs = await self._list_refs()
                if fetches == self._fetches:  # else a fetch ended meanwhile: list again
                    self._refs = refs
        return refs

    async def _list_refs(self) -> dict[str, str]:
        if not (self.path / "HEAD").exists():
            return {}
        out = await git("for-each-ref", "--format=%(objecttype) %(objectname) %(*objecttype)"
                        " %(*objectname) %(refname)", cwd=self.path)
        refs = {}
        for line in out.decode(errors="replace").splitlines():
            kind, sha, peeled_kind, peeled, name = line.split(" ", 4)
            if kind == "commit" or peeled_kind == "commit":  # a tag is peeled to its commit
                refs[name] = sha if kind == "commit" else peeled
        return refs

    async def branches_containing(self, sha: str) -> list[str]:
        """The mirror's branches whose history holds `sha` (a process: see `branches_at`)."""
        out = await git("for-each-ref", "--format=%(refname:lstrip=2)",
                        f"--contains={_checked(sha)}", HEADS, cwd=self.path)
        return out.decode(errors="replace").split("\n")[:-1]

    async def show(self, sha: str, path: str) -> bytes | None:
        """A file's bytes at a commit, or None when it isn't there."""
        try:
            found = await self.objects.read(f"{_checked(sha)}:{path}")
        except GitError:
            return None
        return found[1] if found is not None and found[0] == "blob" else None

    async def commits_between(self, old: str, new: str) -> list[str]:
        """Commits after `old` up to `new`, oldest first (first parents only: the branch's
        own history, not every commit a merge brought in)."""
        out = await git("rev-list", "--reverse", "--first-parent",
                        f"{_checked(old)}..{_checked(new)}", "--", cwd=self.path)
        return out.decode().split()


def _checked(sha: str) -> str:
    if not is_sha(sha):
        raise GitError(f"not a commit sha: {sha!r}")
    return sha
