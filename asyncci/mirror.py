"""The server's bare mirror of each repo, and the one funnel for every git command it runs.

Refs come from outside (webhooks, remotes, the API), so every call puts `--` before them
and shas are checked to be hex before they reach git. A repo's URL may hold a token
(`https://bot:TOKEN@host/x.git`): it never reaches a command line, which `ps` shows every
user, nor an error message. A failing command raises `GitError` with git's own words.
Builds never run here: hosts check out their own copies.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from .config import redact_credentials
from .refs import HEADS, Commit, branch_of, full_ref

SHA_RE = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")
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


class Mirror:
    """A bare mirror of one repo's branches (and pull-request heads, once fetched)."""

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.url = url
        self._lock = asyncio.Lock()
        # Commits never change: a trigger storm on one sha costs one `git show`.
        self._commits: dict[str, Commit] = {}

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
            await self._init()
            await git("fetch", "--quiet", "--no-tags", "--prune", "--", "origin", *specs,
                      cwd=self.path, url=self.url)

    async def _init(self) -> None:
        if not (self.path / "HEAD").exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            await git("init", "--quiet", "--bare", "--", str(self.path))

    async def has(self, sha: str) -> bool:
        if sha in self._commits:
            return True
        try:
            await git("cat-file", "-e", f"{_checked(sha)}^{{commit}}", cwd=self.path)
        except (GitError, FileNotFoundError, NotADirectoryError):
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
        out = await git(
            "show", "-s", "--format=%an <%ae>%x00%B", _checked(sha), "--", cwd=self.path
        )
        author, _, message = out.decode(errors="replace").partition("\0")
        if len(self._commits) >= 4096:
            self._commits.clear()
        commit = self._commits[sha] = Commit(sha, message.strip(), author)
        return commit

    async def resolve(self, ref: str) -> str:
        """The sha a branch name or full ref points at in the mirror."""
        full = full_ref(ref)
        out = await git("rev-parse", "--verify", "--quiet", "--end-of-options",
                        f"{full}^{{commit}}", cwd=self.path)
        return out.decode().strip()

    async def branches_containing(self, sha: str) -> list[str]:
        """The mirror's branches whose history holds `sha`."""
        out = await git("for-each-ref", "--format=%(refname:lstrip=2)",
                        f"--contains={_checked(sha)}", HEADS, cwd=self.path)
        return out.decode(errors="replace").split("\n")[:-1]

    async def show(self, sha: str, path: str) -> bytes | None:
        """A file's bytes at a commit, or None when it isn't there."""
        try:
            return await git("cat-file", "blob", f"{_checked(sha)}:{path}", cwd=self.path)
        except GitError:
            return None

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
