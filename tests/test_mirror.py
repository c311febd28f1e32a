"""The mirror's object reader: one `git cat-file --batch` answering commits and files,
against real repos, with its faults made for real (the process killed or stopped)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asyncci import mirror as mirror_module
from asyncci.mirror import GitError, Mirror
from tests.support.gitrepo import ENV, GitRepo


@pytest.fixture
async def mirror(tmp_path: Path, repo: GitRepo) -> AsyncIterator[Mirror]:
    mirror = Mirror(tmp_path / "mirror.git", str(repo.path))
    await mirror.fetch()
    try:
        yield mirror
    finally:
        await mirror.close()


def shown(repo: GitRepo, sha: str) -> tuple[str, str]:
    """(author, message) as `git show` prints them: what the reader must answer."""
    out = subprocess.run(["git", "show", "-s", "--format=%an <%ae>%x00%B", sha], cwd=repo.path,
                         check=True, capture_output=True).stdout.decode()
    author, _, message = out.partition("\0")
    return author, message.strip()


def reader_pid(mirror: Mirror) -> int:
    assert mirror.objects.proc is not None and mirror.objects.proc.returncode is None
    return mirror.objects.proc.pid


async def test_commits_and_files_are_read_as_git_show_prints_them(
        tmp_path: Path, repo: GitRepo, mirror: Mirror) -> None:
    first = repo.head()
    second = repo.commit("add a pipeline\n\nwith a body\n\n  and an indented line",
                         {".asyncci.toml": "[[jobs]]\n", "sub/dir/a b.txt": "spaced"})
    # A commit that says its message is Latin-1: git show re-encodes it, and so must we.
    subprocess.run(["git", "-c", "i18n.commitEncoding=ISO-8859-1", "commit", "-q",
                    "--allow-empty", "-F", "-"], cwd=repo.path, check=True,
                   input="café au lait".encode("latin-1"), env={**os.environ, **ENV})
    latin = repo.head()
    await mirror.fetch()
    for sha in (first, second, latin):
        commit = await mirror.commit(sha)
        assert (commit.sha, (commit.author, commit.message)) == (sha, shown(repo, sha))
    assert (await mirror.commit(latin)).message == "café au lait"
    assert await mirror.show(second, ".asyncci.toml") == b"[[jobs]]\n"
    assert await mirror.show(second, "sub/dir/a b.txt") == b"spaced"
    assert await mirror.show(first, ".asyncci.toml") is None  # not at that commit
    assert await mirror.show(second, "sub/dir") is None  # a tree, not a file
    assert await mirror.has(second)
    pid = reader_pid(mirror)
    assert [await mirror.show(second, ".asyncci.toml") for _ in range(20)] == [b"[[jobs]]\n"] * 20
    assert reader_pid(mirror) == pid  # one process for every question


async def test_a_missing_object_answers_as_before(repo: GitRepo, mirror: Mirror) -> None:
    unknown = "0123456789" * 4
    assert not await mirror.has(unknown)
    with pytest.raises(GitError, match="bad object"):
        await mirror.commit(unknown)
    assert await mirror.show(unknown, "file.txt") is None
    tree = repo.git("rev-parse", "HEAD^{tree}")
    assert not await mirror.has(tree)  # an object, but no commit
    assert await mirror.show(repo.head(), "file.txt") == b"first commit"


@pytest.mark.parametrize("sha", ["-e", "--batch-all-objects", "HEAD", "main", "0123abc",
                                 "0" * 40 + "\n" + "1" * 40])
async def test_a_name_that_is_no_full_sha_never_reaches_git(
        repo: GitRepo, mirror: Mirror, sha: str) -> None:
    assert not await mirror.has(sha)
    with pytest.raises(GitError, match="not a commit sha"):
        await mirror.commit(sha)
    assert await mirror.show(sha, "file.txt") is None
    assert mirror.objects.proc is None  # nothing was asked


async def test_a_path_cannot_ask_a_second_question(repo: GitRepo, mirror: Mirror) -> None:
    head = repo.head()
    for path in (f"nope\n{head}:file.txt", "file.txt\0trailing", "-e", "--batch-all-objects"):
        assert await mirror.show(head, path) is None
    assert await mirror.show(head, "file.txt") == b"first commit"  # still in step
    assert (await mirror.commit(head)).message == "first commit"


async def test_a_killed_reader_is_replaced_and_nothing_is_lost(
        repo: GitRepo, mirror: Mirror) -> None:
    head = repo.head()
    assert await mirror.show(head, "file.txt") == b"first commit"
    pid = reader_pid(mirror)
    os.kill(pid, signal.SIGKILL)
    assert await mirror.show(head, "file.txt") == b"first commit"
    assert reader_pid(mirror) != pid
    second = repo.commit("second")
    await mirror.fetch()
    os.kill(reader_pid(mirror), signal.SIGKILL)
    assert (await mirror.commit(second)).message == "second"


async def test_objects_fetched_after_the_reader_started_are_found(
        repo: GitRepo, mirror: Mirror) -> None:
    assert await mirror.show(repo.head(), "file.txt") == b"first commit"
    pid = reader_pid(mirror)
    small = repo.commit("small", {"small.txt": "one"})  # fetched as loose objects
    await mirror.fetch()
    assert await mirror.show(small, "small.txt") == b"one"
    assert not list((mirror.path / "objects" / "pack").glob("*.pack"))
    # More than fetch.unpackLimit (100) objects: fetched as a pack the reader never saw.
    big = repo.commit("big", {f"many/{n}.txt": f"file {n}" for n in range(150)})
    await mirror.fetch()
    assert await mirror.show(big, "many/149.txt") == b"file 149"
    assert (await mirror.commit(big)).message == "big"
    assert list((mirror.path / "objects" / "pack").glob("*.pack"))
    assert reader_pid(mirror) == pid


async def test_a_reader_that_hangs_is_killed_after_the_timeout(
        repo: GitRepo, mirror: Mirror) -> None:
    head = repo.head()
    assert await mirror.show(head, "file.txt") == b"first commit"
    pid = reader_pid(mirror)
    mirror.objects.timeout = 0.5
    os.kill(pid, signal.SIGSTOP)  # the process lives but answers nothing
    with pytest.raises(GitError, match="timed out after 0.5s"):
        await mirror.commit(head)
    assert mirror.objects.proc is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped
    assert await mirror.show(head, "file.txt") == b"first commit"
    # A question cancelled half-answered kills the process too: its answer would
    # otherwise be read as the next question's.
    os.kill(reader_pid(mirror), signal.SIGSTOP)
    mirror.objects.timeout = 30
    with pytest.raises(TimeoutError):  # the caller's own bound cancels the question
        await asyncio.wait_for(mirror.show(head, "file.txt"), 0.3)
    assert mirror.objects.proc is None
    assert (await mirror.commit(head)).message == "first commit"


async def test_an_object_over_the_cap_is_cut_and_the_reader_replaced(
        repo: GitRepo, mirror: Mirror, monkeypatch: pytest.MonkeyPatch) -> None:
    sha = repo.commit("big file", {"big.txt": "x" * 100, "small.txt": "fine"})
    await mirror.fetch()
    monkeypatch.setattr(mirror_module, "MAX_OBJECT_BYTES", 10)
    assert await mirror.show(sha, "big.txt") == b"x" * 11
    assert mirror.objects.proc is None  # the rest of the answer was never read
    assert await mirror.show(sha, "small.txt") == b"fine"


async def test_a_closed_mirror_reads_nothing_and_leaves_no_process(
        repo: GitRepo, mirror: Mirror) -> None:
    assert await mirror.has(repo.head())
    proc = mirror.objects.proc
    assert proc is not None
    await mirror.close()
    assert proc.returncode is not None
    assert await mirror.show(repo.head(), "file.txt") is None
    assert mirror.objects.proc is None


async def test_refs_resolve_from_the_mirror_as_of_its_last_fetch(
        tmp_path: Path, repo: GitRepo) -> None:
    mirror = Mirror(tmp_path / "mirror.git", str(repo.path))
    with pytest.raises(GitError):
        await mirror.resolve("main")  # no mirror yet
    first = repo.head()
    await mirror.fetch()
    assert await mirror.resolve("main") == await mirror.resolve("refs/heads/main") == first
    repo.branch("feature")
    second = repo.commit("second")
    repo.git("tag", "-a", "-m", "annotated", "v1", first)
    assert await mirror.resolve("main") == first  # the mirror's, not the remote's
    await mirror.fetch()
    await mirror.fetch("refs/tags/v1")
    assert (await mirror.resolve("main"), await mirror.resolve("feature")) == (second, first)
    assert await mirror.resolve("refs/tags/v1") == first  # peeled to its commit
    repo.git("branch", "-D", "feature")
    await mirror.fetch()
    for name in ("feature", "-e", "--all", "main~1", "main^{tree}", "HEAD", "refs/heads/main\n"):
        with pytest.raises(GitError):
            await mirror.resolve(name)
    await mirror.close()


async def test_the_branches_at_a_commit_are_its_heads_as_of_the_last_fetch(
        tmp_path: Path, repo: GitRepo) -> None:
    mirror = Mirror(tmp_path / "mirror.git", str(repo.path))
    first = repo.head()
    assert await mirror.branches_at(first) == []  # no mirror yet
    repo.branch("feature")
    repo.git("tag", "v1", first)
    await mirror.fetch()
    await mirror.fetch("refs/tags/v1")
    assert sorted(await mirror.branches_at(first)) == ["feature", "main"]  # not the tag
    second = repo.commit("second")
    assert await mirror.branches_at(second) == []
    await mirror.fetch()
    assert (await mirror.branches_at(first), await mirror.branches_at(second)) == (
        ["feature"], ["main"])
    assert await mirror.branches_containing(first) == ["feature", "main"]  # history too
    await mirror.close()
