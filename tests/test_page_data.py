"""What the pages compute, without a server: words for states, the build summary, flaky
tests, the history strip; and the store reads behind them, each through an index."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

from asyncci.model import Build, BuildRequest, Event, JobSpec, JobState, utcnow
from asyncci.model.results import TestOutcome, TestResult
from asyncci.store import Store
from asyncci.store.reads import BuildTime
from asyncci.store.reports import ResultJob
from asyncci.store.schema import MIGRATIONS
from asyncci.web.listing import strip
from asyncci.web.durations import span
from asyncci.web.summary import bar, job_rows, matrix_failures, progress, word
from asyncci.web.testpage import flaky, new_failures

FAILED = TestOutcome.FAILED


def job(id: int, state: str, name: str = "", reason: str | None = None,
        tests: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": id, "name": name or f"job{id}", "state": state, "reason": reason,
            "started_at": None, "finished_at": None, "tests": tests}


def report(failing: list[str], new: list[str]) -> dict[str, Any]:
    return {"totals": {"passed": 3, "failed": len(failing)},
            "failures": [{"name": n, "message": ""} for n in failing],
            "new": [{"name": n} for n in new]}


def test_timeouts_and_cancels_have_their_own_words() -> None:
    timed_out = job(1, "failed", reason="timed out after 1s")
    assert word(timed_out) == "timed out"
    assert word(job(2, "failed", reason="exit code 1")) == "failed"
    assert word(job(3, "cancelled", reason="cancelled by a user")) == "cancelled"
    assert word({"state": "failed", "jobs": [timed_out, job(4, "passed")]}) == "timed out"
    assert word({"state": "failed", "jobs": [timed_out, job(5, "failed")]}) == "failed"
    assert [span(s) for s in (0, 26, 65, 7500)] == ["0.0s", "26s", "1m 05s", "2h 05m"]


def test_the_summary_puts_failures_first_and_counts_a_test_once_across_a_matrix() -> None:
    lost = "host b1 lost at 15:56:58; waiting until 15:57:58 for it"
    jobs = [job(1, "passed", tests=report([], [])), job(2, "queued"),
            {**job(3, "running"), "note": lost},
            job(4, "failed", "py3.11", tests=report(["t.a", "t.b"], ["t.a"])),
            job(5, "failed", "py3.12", tests=report(["t.a"], ["t.a"])),
            job(6, "cancelled", reason="cancelled by a user")]
    rows = job_rows(jobs, {2: ("1000+", "")}, {"job3": 60.0})
    assert [r["job"]["id"] for r in rows] == [4, 5, 6, 3, 2, 1]
    assert [r["tests"] for r in rows] == ["1 new ✘", "1 new ✘", "", "", "", "3 ✔"]
    assert rows[2]["note"] == "cancelled by a user" and rows[4]["note"] == "position 1000+"
    assert rows[3]["usual"] == 60.0 and rows[3]["note"] == lost
    assert rows[0]["bar"] is None and bar(30.0, 60.0) == (30.0, 60.0) and bar(90, 60) == (60, 60)
    assert [(f["name"], f["text"]) for f in matrix_failures(jobs)] == [
        ("t.a", "new failure in 2/3 jobs"), ("t.b", "failing in 1/3 jobs")]


def test_progress_measures_against_the_last_passing_build() -> None:
    now = utcnow()
    running = {"started_at": (now - timedelta(seconds=26)).isoformat(), "finished_at": None}
    last = Build(7, "r", "refs/heads/main", "a" * 40, Event.PUSH, state=JobState.PASSED,
                 created_at=now, started_at=now - timedelta(seconds=70),
                 finished_at=now - timedelta(seconds=10))
    shown = progress(running, last)
    assert shown is not None and shown["text"] == "running for 26s"
    # 33.99… s left: whole seconds are counted as a stopwatch counts them, not rounded up.
    assert shown["eta"] == "about 33s left" and shown["last"] == 7
    assert progress({**running, "finished_at": now.isoformat()}, last) is None
    assert shown["bar"] == (26.0, 60.0)
    assert progress(running, None)["bar"] is None  # type: ignore[index]


def runs(*failing: set[str], sha: str = "") -> tuple[list[ResultJob], dict[int, list[TestResult]]]:
    """Runs of job "test", newest first, each failing the tests named."""
    jobs = [ResultJob(100 - i, "test", 100 - i, "refs/heads/main", sha or f"{i:040x}")
            for i in range(len(failing))]
    return jobs, {j.job_id: [TestResult(n, FAILED) for n in f] for j, f in zip(jobs, failing)}


def test_flaky_means_two_outcomes_on_one_commit_or_two_flips() -> None:
    history, failing = runs({"a", "b"}, set(), {"a"}, {"c"}, {"c"})
    assert [(f["name"], f["why"]) for f in flaky(history, [], failing)] == [
        ("a", "3 flips in the last 5 runs")]  # b failed once: a new failure, not a flake
    assert [f["name"] for f in new_failures(history[:1], history, failing)] == ["a", "b"]
    same, failing = runs({"x"}, set(), sha="f" * 40)
    assert [(f["name"], f["why"]) for f in flaky([], same, failing)] == [
        ("x", "failed and passed on ffffffffff")]


def test_the_strip_is_drawn_oldest_first_and_cancelled_builds_do_not_count() -> None:
    now = utcnow()
    times = [BuildTime(3, JobState.CANCELLED, now, now + timedelta(seconds=1)),
             BuildTime(2, JobState.FAILED, now, now + timedelta(seconds=10)),
             BuildTime(1, JobState.PASSED, now, now + timedelta(seconds=20))]
    drawn = strip(times)
    assert [(b["id"], b["height"], b["x"]) for b in drawn["bars"]] == [(1, 32, 0), (2, 16, 8),
                                                                       (3, 2, 16)]
    assert (drawn["passed"], drawn["judged"], drawn["usual"]) == (1, 2, "20s")
    assert strip([])["bars"] == []


async def finished(store: Store, ref: str, state: JobState, sha: str,
                   results: tuple[TestResult, ...] = (), rebuild_of: int | None = None) -> int:
    spec = JobSpec("test", "true")
    build = (await store.enqueue_build(
        BuildRequest("r", ref, sha, Event.PUSH, None, rebuild_of=rebuild_of), [spec])).build
    await store.claim_job(build.jobs[0].id, "h", 0)
    await store.finish_job(build.jobs[0].id, 1, state, tests=results)
    return build.id


async def test_store_reads_for_the_pages(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db")
    try:
        slow = (TestResult("t.slow", TestOutcome.PASSED, duration=9.5),
                TestResult("t.bad", FAILED, "boom", duration=0.5),
                TestResult("t.fast", TestOutcome.PASSED, duration=0.01))
        one = await finished(store, "refs/heads/main", JobState.FAILED, "a" * 40, slow)
        two = await finished(store, "refs/heads/main", JobState.PASSED, "b" * 40)
        three = await finished(store, "refs/heads/dev", JobState.PASSED, "c" * 40,
                               rebuild_of=one)
        assert (await store.get_build(three)).rebuild_of == one  # type: ignore[union-attr]
        assert await store.rebuilds_of(one) == [three]
        last = await store.last_passed("r", "refs/heads/main", 99)
        assert last is not None and last.id == two
        assert await store.last_passed("r", "refs/heads/main", two) is None
        assert [t.id for t in await store.build_times("r", "refs/heads/main")] == [two, one]
        assert [b.id for b in await store.list_builds(event="push")] == [three, two, one]
        assert await store.list_builds(event="cron") == []
        [result] = await store.result_jobs("r", "refs/heads/main")
        assert (result.build_id, result.name) == (one, "test")
        failing = await store.failing_tests([result.job_id])
        assert failing == {result.job_id: [TestResult("t.bad", FAILED, "boom")]}
        assert [(t.name, t.duration) for _, t in await store.slowest_tests([result.job_id], 2)] == [
            ("t.slow", 9.5), ("t.bad", 0.5)]
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "db") as db:
        def plan(sql: str) -> str:
            return " ".join(r[-1] for r in db.execute("EXPLAIN QUERY PLAN " + sql))
        assert "builds_passed" in plan("SELECT * FROM builds WHERE repo = 'r' AND ref = 'x'"
                                       " AND state = 'passed' AND id < 5 ORDER BY id DESC LIMIT 1")
        assert "tests_failing" in plan(
            "SELECT * FROM tests INDEXED BY tests_failing"
            " WHERE outcome IN ('failed', 'errored') AND job_id IN (1, 2)")
        assert "tests_slowest" in plan("SELECT * FROM tests WHERE job_id = 1 AND duration > 0"
                                       " ORDER BY duration DESC LIMIT 20")
        assert "builds_event" in plan("SELECT * FROM builds WHERE event = 'cron' ORDER BY id DESC")
        assert "builds_rebuilds" in plan("SELECT id FROM builds WHERE rebuild_of = 3")
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
