"""The planner's decisions, asked directly: one build per trigger, which builds a new one
supersedes (never a person's), what a build that cannot be planned shows, trust, cron
slots and rebuilds. A real store in tmp_path and real git repos."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from asyncci.model import Approval, Event, JobState
from asyncci.planner import PlanError
from asyncci.refs import Commit
from tests.support.gitrepo import GitRepo
from tests.support.planning import planning

PIPELINE = '''
[[jobs]]
name = "lint"
script = "ruff check ."

[[jobs]]
name = "test"
script = "pytest"
timeout = "2h"
'''


def on_branch(repo: GitRepo, branch: str, message: str) -> str:
    repo.branch(branch)
    repo.checkout(branch)
    return repo.commit(message)


async def test_a_trigger_seen_twice_makes_one_build(tmp_path: Path, repo: GitRepo) -> None:
    async with planning(tmp_path, repo) as p:
        first = await p.planner.branch_build(p.repo, "refs/heads/main", Commit(repo.head()))
        again = await p.planner.branch_build(p.repo, "refs/heads/main", Commit(repo.head()),
                                             Event.PUSH)
    assert first.created and not again.created and again.build.id == first.build.id
    assert p.told == [first]  # the scheduler hears of a build once
    assert (first.build.message, first.build.author) == (
        "first commit", "Ada Tester <ada@example.org>")
    assert [j.name for j in first.build.jobs] == ["build"]
    assert first.build.base_ref is None  # the default branch compares with nothing


async def test_a_newer_commit_supersedes_the_older_builds_of_its_branch(
        tmp_path: Path, repo: GitRepo) -> None:
    old = on_branch(repo, "dev", "old")
    async with planning(tmp_path, repo) as p:
        older = await p.planner.branch_build(p.repo, "refs/heads/dev", Commit(old))
        pushed = await p.planner.branch_build(p.repo, "refs/heads/dev", Commit(old), Event.PUSH)
        newer = await p.planner.branch_build(p.repo, "refs/heads/dev",
                                             Commit(repo.commit("new")))
        assert not pushed.created
        assert newer.cancelled == [j.id for j in older.build.jobs]
        assert await p.state(older.build.id) is JobState.CANCELLED
        assert newer.build.base_ref == "refs/heads/main"


@pytest.mark.parametrize("keys", [{}, {"build_every_commit": True}],
                         ids=["kept branch", "build_every_commit"])
async def test_some_branches_keep_every_build(tmp_path: Path, repo: GitRepo,
                                             keys: dict[str, Any]) -> None:
    """main is in keep_superseded by default; build_every_commit keeps them everywhere."""
    async with planning(tmp_path, repo, **keys) as p:
        older = await p.planner.branch_build(p.repo, "refs/heads/main", Commit(repo.head()))
        newer = await p.planner.branch_build(p.repo, "refs/heads/main",
                                             Commit(repo.commit("new")))
        assert newer.cancelled == []
        assert await p.state(older.build.id) is JobState.QUEUED


async def test_a_persons_build_is_never_superseded_and_supersedes_nothing(
        tmp_path: Path, repo: GitRepo) -> None:
    old = on_branch(repo, "dev", "old")
    async with planning(tmp_path, repo) as p:
        polled = await p.planner.branch_build(p.repo, "refs/heads/dev", Commit(old))
        manual = await p.planner.manual(p.repo, "dev", None)
        assert manual.event is Event.MANUAL and manual.sha == old
        newer = await p.planner.manual(p.repo, "dev", repo.commit("new"))
        assert await p.state(polled.build.id) is JobState.QUEUED  # by a manual build
        pushed = await p.planner.branch_build(p.repo, "refs/heads/dev",
                                              Commit(repo.commit("newest")), Event.PUSH)
        assert pushed.cancelled == [polled.build.jobs[0].id]
        assert await p.state(manual.id) is JobState.QUEUED
        assert await p.state(newer.id) is JobState.QUEUED


async def test_a_manual_build_of_a_branch_head_is_that_commits_build(
        tmp_path: Path, repo: GitRepo) -> None:
    async with planning(tmp_path, repo) as p:
        manual = await p.planner.manual(p.repo, None, None)  # the default branch's head
        assert (manual.ref, manual.sha, manual.untrusted) == (
            "refs/heads/main", repo.head(), False)
        polled = await p.planner.branch_build(p.repo, "refs/heads/main", Commit(repo.head()))
        assert not polled.created and polled.build.id == manual.id
        again = await p.planner.manual(p.repo, "main", repo.head())
        assert again.id != manual.id  # a person asking again always gets a new build
        with pytest.raises(PlanError, match="unknown ref"):
            await p.planner.manual(p.repo, "nowhere", None)
        with pytest.raises(PlanError, match="not a commit sha"):
            await p.planner.manual(p.repo, "main", "HEAD~1")


async def test_a_commit_on_no_built_branch_is_untrusted(tmp_path: Path, repo: GitRepo) -> None:
    stray = on_branch(repo, "stray", "not on any built branch")
    async with planning(tmp_path, repo, timeout="10m") as p:
        build = await p.planner.manual(p.repo, "stray", stray)
    assert build.untrusted
    assert [j.spec.timeout for j in build.jobs] == [600.0]


async def test_pull_requests_by_their_origin(tmp_path: Path, repo: GitRepo) -> None:
    """A fork's is untrusted, with its jobs' time capped at the repo's; under "approve" it
    waits for a person unless its author belongs to the repo; a newer head supersedes."""
    repo.commit("the pipeline", {".asyncci.toml": PIPELINE})
    heads = [on_branch(repo, "topic", "head 0"), repo.commit("head 1")]
    repo.git("update-ref", "refs/pull/1/head", heads[1])
    async with planning(tmp_path, repo, timeout="30m", fork_pull_requests="approve") as p:
        repo.git("update-ref", "refs/pull/0/head", heads[0])
        fork = await p.planner.pull_request(p.repo, 0, heads[0], "main", True, "NONE")
        assert fork is not None and fork.build.untrusted and fork.build.fork
        assert fork.build.approval is Approval.WAITING
        assert [j.spec.timeout for j in fork.build.jobs] == [1800.0, 1800.0]  # "2h" capped
        assert (fork.build.ref, fork.build.pr, fork.build.base_ref) == (
            "refs/pull/0/head", 0, "refs/heads/main")
        repo.git("update-ref", "refs/pull/0/head", heads[1])  # pushed to
        member = await p.planner.pull_request(p.repo, 0, heads[1], "main", True, "MEMBER")
        assert member is not None and member.build.approval is None
        assert member.cancelled == [j.id for j in fork.build.jobs]
    async with planning(tmp_path, repo, fork_pull_requests="ignore") as p:
        assert await p.planner.pull_request(p.repo, 1, heads[1], "main", True, "OWNER") is None
        own = await p.planner.pull_request(p.repo, 1, heads[1], "main", False, "NONE")
        assert own is not None and not own.build.untrusted


async def test_a_commit_that_cannot_be_planned_gets_the_pipeline_job(
        tmp_path: Path, repo: GitRepo) -> None:
    broken = repo.commit("broken", {".asyncci.toml": "[[jobs]]\nname = 3\n"})
    async with planning(tmp_path, repo) as p:
        result = await p.planner.branch_build(p.repo, "refs/heads/main", Commit(broken))
        build = result.build
        assert (build.state, build.error) == (JobState.ERRORED, build.jobs[0].reason)
        assert ".asyncci.toml" in str(build.error)
        assert [(j.name, j.state, j.spec.script) for j in build.jobs] == [
            ("pipeline", JobState.ERRORED, "")]
        assert p.told == [result]  # GitHub hears of the errored job like any other
        # A rebuild plans it again: the file (or the config) may have been mended since.
        repo.commit("mended", {".asyncci.toml": PIPELINE})
        again = await p.planner.rebuild(build)
        assert again.state is JobState.ERRORED and again.rebuild_of == build.id
    async with planning(tmp_path, repo, pipeline_file="") as p:
        mended = await p.planner.rebuild(build)
        assert (mended.state, [j.name for j in mended.jobs]) == (JobState.QUEUED, ["build"])
    async with planning(tmp_path, repo, pipeline_file="ci.toml", script="") as p:
        nothing = await p.planner.branch_build(p.repo, "refs/heads/main", Commit(repo.head()))
        assert "has no script" in str(nothing.build.error)


async def test_a_rebuild_repeats_the_pipeline_stored_with_the_build(
        tmp_path: Path, repo: GitRepo) -> None:
    sha = repo.commit("the pipeline", {".asyncci.toml": PIPELINE})
    async with planning(tmp_path, repo) as p:
        first = (await p.planner.branch_build(p.repo, "refs/heads/main", Commit(sha))).build
        repo.commit("the pipeline changes", {".asyncci.toml": "[[jobs]]\nname = 'x'\n"
                                                            "script = 'true'\n"})
        again = await p.planner.rebuild(first)
        assert [j.name for j in again.jobs] == ["lint", "test"]
        assert (again.event, again.sha, again.rebuild_of) == (Event.MANUAL, sha, first.id)
        one = await p.planner.rebuild(first, {"test"})
        assert [j.name for j in one.jobs] == ["test"]
        with pytest.raises(PlanError, match="no job named"):
            await p.planner.rebuild(first, {"nothing"})


async def test_a_schedule_builds_each_slot_once(tmp_path: Path, repo: GitRepo) -> None:
    slot = datetime(2026, 5, 1, 6, 30, tzinfo=timezone.utc)
    async with planning(tmp_path, repo) as p:
        assert await p.planner.last_cron(p.repo) is None
        build = await p.planner.cron(p.repo, slot)
        assert (build.event, build.ref, build.sha) == (Event.CRON, "refs/heads/main",
                                                       repo.head())
        assert (await p.planner.cron(p.repo, slot)).id == build.id
        assert await p.planner.last_cron(p.repo) == slot
        await p.planner.manual(p.repo, None, None)  # other builds are no slot
        assert await p.planner.last_cron(p.repo) == slot


async def test_a_sha_force_pushed_off_every_branch_is_untrusted(
        tmp_path: Path, repo: GitRepo) -> None:
    async with planning(tmp_path, repo) as p:
        gone = repo.commit("pushed, then force-pushed away")
        assert not (await p.planner.manual(p.repo, "main", None)).untrusted  # the mirror saw it
        repo.git("reset", "-q", "--hard", "HEAD~1")
        assert (await p.planner.manual(p.repo, None, gone)).untrusted
        assert not (await p.planner.manual(p.repo, None, repo.head())).untrusted
