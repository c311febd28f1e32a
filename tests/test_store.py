"""The store: migrations, idempotent enqueue, guarded transitions, outbox, recovery."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from asyncci.model import BuildRequest, Event, JobSpec, JobState, iso, utcnow
from asyncci.model.results import Artifact, TestOutcome, TestResult
from asyncci.store import Store
from asyncci.store.schema import MIGRATIONS

SHA = "a" * 40
SPEC = JobSpec(name="build", script="true")
AUTOMATIC = {Event.POLL, Event.PUSH}  # what the tests' builds supersede


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
        await store.enqueue_build(request(sha="d" * 40, ref="refs/heads/dev"), [SPEC], AUTOMATIC)
        assert [(b.ref, b.sha[0]) for b in await store.latest_per_ref("r")] == [
            ("refs/heads/dev", "d"), ("refs/heads/main", "c")]
        assert await store.latest_per_ref("other") == []
    finally:
        await store.close()


@pytest.mark.parametrize("version", range(1, len(MIGRATIONS)))
async def test_a_file_of_every_older_version_is_migrated(tmp_path: Path, version: int) -> None:
    """Including the slot of its scheduled builds, taken from their trigger keys once."""
    path = tmp_path / "asyncci.db"
    slot = datetime(2026, 3, 1, 4, 0, tzinfo=timezone.utc)
    with sqlite3.connect(path) as db:
        db.executescript("".join(MIGRATIONS[:version]) + f"PRAGMA user_version = {version};")
        db.executemany(
            "INSERT INTO builds (repo, ref, sha, event, trigger_key, pipeline, state, created_at)"
            " VALUES (?, 'refs/heads/main', ?, ?, ?, '[]', 'passed', '2026-01-01T00:00:00.000Z')",
            [("r", "a" * 40, "cron", f"cron\0r\0{iso(slot)}"), ("r", "b" * 40, "poll", "k"),
             ("other", "c" * 40, "cron", f"cron\0other\0{iso(slot - timedelta(days=1))}")])
    store = await Store.open(path)
    try:
        assert await store.last_cron_slot("r") == slot
        assert await store.last_cron_slot("other") == slot - timedelta(days=1)
        assert [b.sha[0] for b in await store.list_builds()] == ["c", "b", "a"]
        later = replace(request(sha="d" * 40, key="cron-later", event=Event.CRON),
                        cron_slot=slot + timedelta(hours=1))
        await store.enqueue_build(later, [SPEC])
        assert await store.last_cron_slot("r") == slot + timedelta(hours=1)
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


async def test_concurrent_identical_requests_make_one_build(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db")
    try:
        results = await asyncio.gather(
            *(store.enqueue_build(request(), [SPEC], AUTOMATIC) for _ in range(20))
        )
        assert sum(r.created for r in results) == 1
        assert len({r.build.id for r in results}) == 1
        assert len(await store.list_builds()) == 1
        manual = await asyncio.gather(
            *(store.enqueue_build(request(key=None, event=Event.MANUAL), [SPEC])
              for _ in range(3))
        )
        assert all(r.created for r in manual)  # manual builds are always new
    finally:
        await store.close()


async def test_transitions_are_guarded_by_state_and_attempt(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db")
    try:
        build = (await store.enqueue_build(request(github="o/r"), [SPEC])).build
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
        build = (await store.enqueue_build(request(), [SPEC])).build
        await store.claim_job(build.jobs[0].id, "h", 0)
        assert await store.pending_outbox() == []
    finally:
        await store.close()


async def test_supersede_cancels_queued_and_marks_running(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db")
    try:
        first = (await store.enqueue_build(request("1" * 40, "k1"), [SPEC, SPEC], AUTOMATIC)).build
        await store.claim_job(first.jobs[0].id, "h", 0)
        manual = (await store.enqueue_build(
            request("1" * 40, None, event=Event.MANUAL), [SPEC], AUTOMATIC)).build
        same = (await store.enqueue_build(request("2" * 40, "k1b"), [SPEC])).build
        second = await store.enqueue_build(request("2" * 40, "k2"), [SPEC], AUTOMATIC)
        assert second.cancelled == [first.jobs[1].id]
        assert second.stopping == [first.jobs[0].id]
        assert await store.cancel_reason(first.jobs[0].id) == "superseded by build 4"
        assert await store.cancel_reason(first.jobs[1].id) is None
        kept = await store.get_build(manual.id)
        assert kept is not None and kept.state is JobState.QUEUED  # not an event it was told
        kept = await store.get_build(same.id)
        assert kept is not None and kept.state is JobState.QUEUED  # the same commit
        other = await store.enqueue_build(
            request("3" * 40, "k3", ref="refs/heads/x"), [SPEC], AUTOMATIC)
        assert other.cancelled == [] and other.stopping == []  # another ref: untouched
    finally:
        await store.close()


async def test_active_jobs_and_drain_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = await Store.open(path)
    build = (await store.enqueue_build(request(), [SPEC, SPEC])).build
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
        result = await store.enqueue_build(request(github="o/r"), [JobSpec("why", "")],
                                           error="bad pipeline")
        assert result.build.state is JobState.ERRORED
        assert result.build.error == "bad pipeline"
        assert result.build.finished_at is not None
        [job] = result.build.jobs
        assert (job.name, job.state, job.reason) == ("why", JobState.ERRORED, "bad pipeline")
        assert [i.state for i in await store.pending_outbox()] == [JobState.ERRORED]
        assert await store.active_jobs() == []
        assert await store.build_pipeline(result.build.id) == []  # a rebuild plans it again
    finally:
        await store.close()


async def finished_with(store: Store, sha: str, ref: str, tests: dict[str, str],
                        base_ref: str | None = None, name: str = "test") -> int:
    """A build of one job `name` that finished with these test outcomes; its job id."""
    req = replace(request(sha=sha, key=sha, ref=ref), base_ref=base_ref)
    build = (await store.enqueue_build(req, [JobSpec(name, "pytest")])).build
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


async def test_a_transition_that_fails_changes_nothing(tmp_path: Path) -> None:
    """All of a transition's statements commit together or not at all."""
    store = await Store.open(tmp_path / "db")
    try:
        build = (await store.enqueue_build(request(github="o/r"), [SPEC])).build
        job_id = build.jobs[0].id
        await store.claim_job(job_id, "h", 0)
        twice = [Artifact("a.txt", 1), Artifact("a.txt", 2)]  # one path twice: refused
        tests = [TestResult("t", TestOutcome.PASSED)]
        with pytest.raises(sqlite3.IntegrityError):
            await store.finish_job(job_id, 1, JobState.PASSED, 0, artifacts=twice, tests=tests)
        job = await store.get_job(job_id)
        assert job is not None and job.state is JobState.RUNNING
        assert job.attempts[0].finished_at is None
        assert await store.artifacts(job_id) == []
        assert [i.state for i in await store.pending_outbox()] == [
            JobState.QUEUED, JobState.RUNNING]
        assert await store.finish_job(job_id, 1, JobState.PASSED, 0, tests=tests)
        report = await store.test_report(job_id)
        assert report is not None and report.totals["passed"] == 1
    finally:
        await store.close()


async def test_the_outbox_hook_follows_commits_that_add_rows(tmp_path: Path) -> None:
    told: list[int] = []
    store = await Store.open(tmp_path / "db", on_outbox=lambda: told.append(len(told)))
    try:
        quiet = (await store.enqueue_build(request(key="quiet"), [SPEC])).build
        await store.claim_job(quiet.jobs[0].id, "h", 0)
        assert told == []  # a build that reports nowhere
        build = (await store.enqueue_build(request(key="told", github="o/r"), [SPEC])).build
        assert len(told) == 1
        await store.set_wait_details({build.jobs[0].id: "position 1"})
        assert await store.claim_job(build.jobs[0].id, "h", 1) is not None
        assert await store.claim_job(build.jobs[0].id, "h", 1) is None  # nothing changed
        assert len(told) == 2
        await store.finish_job(build.jobs[0].id, 1, JobState.PASSED, 0)
        assert len(told) == 3
    finally:
        await store.close()


async def test_queued_jobs_left_with_a_pending_cancel_are_dropped_at_once(
        tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db")
    build = (await store.enqueue_build(request(github="o/r"), [SPEC, SPEC])).build
    await store.close()
    with sqlite3.connect(tmp_path / "db") as db:  # as an older release left them
        db.execute("UPDATE jobs SET cancel_requested = 1, reason = 'cancelled by a user'")
    store = await Store.open(tmp_path / "db")
    try:
        await store.drop_cancelled()
        assert await store.active_jobs() == []
        done = await store.get_build(build.id)
        assert done is not None and done.state is JobState.CANCELLED
        assert [(i.state, i.detail) for i in await store.pending_outbox()][2:] == [
            (JobState.CANCELLED, "cancelled by a user")] * 2
    finally:
        await store.close()


async def test_a_list_may_read_the_jobs_of_some_states_alone(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db")
    try:
        failed = await store.enqueue_build(request(sha="a" * 40, key="a"), [SPEC])
        queued = await store.enqueue_build(request(sha="b" * 40, key="b"), [SPEC])
        job_id = failed.build.jobs[0].id
        assert await store.claim_job(job_id, "h", 0) is not None
        assert await store.finish_job(job_id, 1, JobState.FAILED, None, "timed out after 1m")
        listed = await store.list_builds(jobs_of=(JobState.FAILED,))
        assert [(b.id, b.state, len(b.jobs)) for b in listed] == [
            (queued.build.id, JobState.QUEUED, 0), (failed.build.id, JobState.FAILED, 1)]
        assert listed[1].jobs[0].reason == "timed out after 1m"
        assert [len(b.jobs) for b in await store.list_builds()] == [1, 1]
    finally:
        await store.close()
