"""The store: migrations, idempotent enqueue, guarded transitions, outbox, recovery."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from asyncci.model import Artifact, Event, JobSpec, JobState, TestOutcome, TestResult, utcnow
from asyncci.store import MIGRATIONS, BuildRequest, Store

SHA = "a" * 40
SPEC = JobSpec(name="build", script="true")


def request(sha: str = SHA, key: str | None = "k1", github: str | None = None,
            ref: str = "refs/heads/main", event: Event = Event.POLL) -> BuildRequest:
    return BuildRequest(repo="r", ref=ref, sha=sha, event=event, trigger_key=key,
                        github=github)


async def test_migrates_an_empty_file_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "asyncci.db"
    store = await Store.open(path)
    await store.close()
    store = await Store.open(path)  # a second open applies nothing twice
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"builds", "jobs", "attempts", "outbox", "hosts", "heads"} <= tables


async def test_an_older_file_is_upgraded_with_each_refs_newest_build(tmp_path: Path) -> None:
    path = tmp_path / "asyncci.db"
    with sqlite3.connect(path) as db:  # a file written by the first release
        db.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
        db.executemany(
            "INSERT INTO builds (repo, ref, sha, event, pipeline, state, created_at)"
            " VALUES ('r', ?, ?, 'poll', '[]', 'passed', '2026-01-01T00:00:00.000Z')",
            [("refs/heads/main", "a" * 40), ("refs/heads/dev", "b" * 40),
             ("refs/heads/main", "c" * 40)],
        )
    store = await Store.open(path)
    try:
        assert [(b.ref, b.sha[0]) for b in await store.latest_per_ref("r")] == [
            ("refs/heads/main", "c"), ("refs/heads/dev", "b")]
        await store.enqueue_build(request(sha="d" * 40, ref="refs/heads/dev"), [SPEC], True)
        assert [(b.ref, b.sha[0]) for b in await store.latest_per_ref("r")] == [
            ("refs/heads/dev", "d"), ("refs/heads/main", "c")]
        assert await store.latest_per_ref("other") == []
    finally:
        await store.close()


async def test_concurrent_identical_requests_make_one_build(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db")
    try:
        results = await asyncio.gather(
            *(store.enqueue_build(request(), [SPEC], supersede=True) for _ in range(20))
        )
        assert sum(r.created for r in results) == 1
        assert len({r.build.id for r in results}) == 1
        assert len(await store.list_builds()) == 1
        manual = await asyncio.gather(
            *(store.enqueue_build(request(key=None, event=Event.MANUAL), [SPEC], False)
              for _ in range(3))
        )
        assert all(r.created for r in manual)  # manual builds are always new
    finally:
        await store.close()


async def test_transitions_are_guarded_by_state_and_attempt(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db")
    try:
        build = (await store.enqueue_build(request(github="o/r"), [SPEC], False)).build
        job_id = build.jobs[0].id
        claim = await store.claim_job(job_id, "h", 0)
        assert claim is not None and claim.job.attempt == 1
        assert await store.claim_job(job_id, "h", 1) is None  # already running
        assert not await store.finish_job(job_id, 2, JobState.PASSED)  # wrong attempt
        assert await store.requeue_job(job_id, 1, "host lost")
        again = await store.claim_job(job_id, "h", 1)
        assert again is not None and again.job.attempt == 2
        assert not await store.finish_job(job_id, 1, JobState.PASSED)  # a stale attempt
        assert await store.finish_job(job_id, 2, JobState.FAILED, 3, "exit code 3")
        assert not await store.finish_job(job_id, 2, JobState.PASSED)  # final is final
        done = await store.get_build(build.id)
        assert done is not None and done.state is JobState.FAILED
        assert done.finished_at is not None
        job = done.jobs[0]
        assert (job.exit_code, job.attempt) == (3, 2)
        assert [(a.number, a.outcome, a.reason) for a in job.attempts] == [
            (1, "requeued", "host lost"), (2, "failed", "exit code 3")]
        sent = [i.state for i in await store.pending_outbox()]
        assert sent == [JobState.QUEUED, JobState.RUNNING, JobState.QUEUED,
                        JobState.RUNNING, JobState.FAILED]
    finally:
        await store.close()


async def test_no_outbox_rows_without_a_github_repo(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db")
    try:
        build = (await store.enqueue_build(request(), [SPEC], False)).build
        await store.claim_job(build.jobs[0].id, "h", 0)
        assert await store.pending_outbox() == []
    finally:
        await store.close()


async def test_supersede_cancels_queued_and_marks_running(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db")
    try:
        first = (await store.enqueue_build(request("1" * 40, "k1"), [SPEC, SPEC], True)).build
        await store.claim_job(first.jobs[0].id, "h", 0)
        manual = (await store.enqueue_build(
            request("1" * 40, None, event=Event.MANUAL), [SPEC], True)).build
        second = await store.enqueue_build(request("2" * 40, "k2"), [SPEC], True)
        assert second.cancelled == [first.jobs[1].id]
        assert second.stopping == [first.jobs[0].id]
        assert await store.cancel_reason(first.jobs[0].id) == "superseded by build 3"
        assert await store.cancel_reason(first.jobs[1].id) is None
        kept = await store.get_build(manual.id)
        assert kept is not None and kept.state is JobState.QUEUED  # manual is never superseded
        other = await store.enqueue_build(request("3" * 40, "k3", ref="refs/heads/x"), [SPEC], True)
        assert other.cancelled == [] and other.stopping == []  # another ref: untouched
    finally:
        await store.close()


async def test_active_jobs_and_drain_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = await Store.open(path)
    build = (await store.enqueue_build(request(), [SPEC, SPEC], False)).build
    await store.claim_job(build.jobs[0].id, "h", 3)
    await store.set_drained("h", True)
    await store.close()
    store = await Store.open(path)
    try:
        active = await store.active_jobs()
        assert [(a.job.state, a.job.host, a.job.slot) for a in active] == [
            (JobState.RUNNING, "h", 3), (JobState.QUEUED, None, None)]
        assert await store.drained_hosts() == {"h"}
    finally:
        await store.close()


async def test_a_build_that_could_not_be_planned_says_why(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db")
    try:
        result = await store.enqueue_build(request(github="o/r"), [], False, error="bad pipeline")
        assert result.build.state is JobState.ERRORED
        assert result.build.error == "bad pipeline"
        assert result.build.finished_at is not None
        [job] = result.build.jobs
        assert (job.name, job.state, job.reason) == ("pipeline", JobState.ERRORED, "bad pipeline")
        assert [i.state for i in await store.pending_outbox()] == [JobState.ERRORED]
        assert await store.active_jobs() == []
    finally:
        await store.close()


async def finished_with(store: Store, sha: str, ref: str, tests: dict[str, str],
                        base_ref: str | None = None, name: str = "test") -> int:
    """A build of one job `name` that finished with these test outcomes; its job id."""
    req = replace(request(sha=sha, key=sha, ref=ref), base_ref=base_ref)
    build = (await store.enqueue_build(req, [JobSpec(name, "pytest")], supersede=False)).build
    job = build.jobs[0]
    await store.claim_job(job.id, "h", 0)
    results = [TestResult(n, TestOutcome(o), f"{n} says {o}") for n, o in tests.items()]
    assert await store.finish_job(job.id, 1, JobState.FAILED, 1, tests=results,
                                  artifacts=[Artifact("report.xml", 10)])
    return job.id


async def test_results_are_compared_with_the_base_branchs_newest(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db")
    main, pr = "refs/heads/main", "refs/pull/3/head"
    try:
        await finished_with(store, "1" * 40, main, {"A": "passed", "B": "passed"})
        base = await finished_with(store, "2" * 40, main,
                                   {"A": "failed", "B": "passed", "C": "errored", "D": "failed"})
        await finished_with(store, "3" * 40, main, {"A": "failed"}, name="other job")
        job = await finished_with(store, "4" * 40, pr, {
            "A": "failed", "B": "failed", "C": "passed", "E": "skipped"}, base_ref=main)
        report = await store.test_report(job)
        assert report is not None
        base_job = await store.get_job(base)
        assert base_job is not None and report.base_build == base_job.build_id
        assert (report.new, report.fixed, report.still_failing) == (["B"], ["C"], ["A"])
        assert report.totals == {"passed": 1, "failed": 2, "errored": 0, "skipped": 1}
        assert [f.message for f in report.failures] == ["A says failed", "B says failed"]
        assert report.summary() == "1 new failure (B), 1 fixed (C), 1 still failing (A)"
        # The base branch moving on later changes nothing of what the job was told.
        await finished_with(store, "6" * 40, main, {"A": "passed", "B": "failed"})
        assert await store.test_report(job) == report
        main_report = await store.test_report(base)  # the default branch: no base applies
        assert main_report is not None and main_report.summary() == "3 of 4 tests failing"
        # No base results yet: say so rather than guess.
        lone = await finished_with(store, "5" * 40, pr, {"A": "failed"}, base_ref="refs/heads/dev")
        alone = await store.test_report(lone)
        assert alone is not None and alone.base_build is None and alone.new == []
        assert "nothing on the base branch" in alone.summary()
        assert await store.test_report(10**6) is None
        history = await store.test_history("r", "test", "A")
        assert [(h.ref, h.outcome) for h in history] == [
            (pr, "failed"), (main, "passed"), (pr, "failed"), (main, "failed"), (main, "passed")]
        assert await store.artifacts(job) == [Artifact("report.xml", 10)]
        # Retention forgets the artifacts with the log.
        expired = await store.expire_logs(utcnow() + timedelta(seconds=1))
        assert job in expired and await store.artifacts(job) == []
    finally:
        await store.close()
