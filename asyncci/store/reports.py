"""What finished jobs left behind, as read back: artifacts, test results, a job's report
against its base branch, a test's history, and the windows the tests page reads."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from ..model.results import Artifact, TestOutcome, TestReport, TestResult
from .connection import Part, Sql
from .rows import of_repo, timestamp

# The tests page looks this far back: flakiness and "new" are questions about recent runs.
RECENT_BUILDS = 200


@dataclass(frozen=True)
class TestRun:
    """One test's outcome in one job: a line of its history."""

    __test__ = False

    build_id: int
    job_id: int
    ref: str
    sha: str
    outcome: TestOutcome
    message: str
    finished_at: datetime | None


@dataclass(frozen=True)
class ResultJob:
    """A finished job that left test results, and the commit its build built."""

    job_id: int
    name: str
    build_id: int
    ref: str
    sha: str


class Reports(Part):
    async def artifacts(self, job_id: int) -> list[Artifact]:
        rows = await self._db.read(lambda sql: sql.all(
            "SELECT path, size FROM artifacts WHERE job_id = ? ORDER BY path", job_id))
        return [Artifact(r[0], r[1]) for r in rows]

    async def test_report(self, job_id: int) -> TestReport | None:
        """A job's test results against the newest results of the job of the same name on
        its build's base branch from before it (SPEC §7): what a pull request is told does
        not change as the base branch moves on. None for an unknown job."""

        def report(sql: Sql) -> TestReport | None:
            job = sql.one("SELECT j.name, b.id, b.repo, b.base_ref FROM jobs j"
                          " JOIN builds b ON b.id = j.build_id WHERE j.id = ?", job_id)
            if job is None:
                return None
            results = _tests(sql, job_id)
            base = None
            if job["base_ref"] is not None and results:
                base = sql.one(
                    "SELECT j.id, j.build_id FROM builds b JOIN jobs j ON j.build_id = b.id"
                    " WHERE b.repo = ? AND b.ref = ? AND b.id < ? AND j.name = ?"
                    " AND j.test_count > 0 ORDER BY b.id DESC LIMIT 1",
                    job["repo"], job["base_ref"], job["id"], job["name"])
            return TestReport.compare(results, job["base_ref"],
                                      base["build_id"] if base else None,
                                      _tests(sql, base["id"]) if base else [])

        return await self._db.read(report)

    async def test_history(self, repo: str, job: str, test: str, limit: int = 50
                           ) -> list[TestRun]:
        """A test's outcomes in a repo's jobs of one name, newest first."""
        rows = await self._db.read(lambda sql: sql.all(
            "SELECT b.id, j.id, b.ref, b.sha, t.outcome, t.message, j.finished_at"
            " FROM tests t JOIN jobs j ON j.id = t.job_id JOIN builds b ON b.id = j.build_id"
            " WHERE t.name = ? AND j.name = ? AND b.repo = ? ORDER BY t.job_id DESC LIMIT ?",
            test, job, repo, limit))
        return [TestRun(r[0], r[1], r[2], r[3], TestOutcome(r[4]), r[5], timestamp(r[6]))
                for r in rows]

    async def result_jobs(self, repo: str, ref: str | None = None,
                          builds: int = RECENT_BUILDS) -> list[ResultJob]:
        """The jobs with test results among a repo's (or one ref's) last `builds` builds,
        newest build first: the window the tests page reads, so its cost does not grow
        with the history."""
        where, args = of_repo(repo, ref)
        rows = await self._db.read(lambda sql: sql.all(
            "SELECT j.id, j.name, b.id, b.ref, b.sha FROM"
            f" (SELECT id, ref, sha FROM builds WHERE {where} ORDER BY id DESC LIMIT ?) b"
            " JOIN jobs j ON j.build_id = b.id"
            " WHERE j.test_count > 0 AND j.finished_at IS NOT NULL ORDER BY b.id DESC, j.id",
            *args, builds))
        return [ResultJob(*r) for r in rows]

    async def failing_tests(self, job_ids: Collection[int], limit: int = 5000
                            ) -> dict[int, list[TestResult]]:
        """The failed and errored tests of each job, newest jobs first until `limit` rows,
        each message cut to its start (read through a partial index that holds failing
        rows only: a job's thousands of passing tests are never read)."""

        def failing(sql: Sql) -> dict[int, list[TestResult]]:
            found: dict[int, list[TestResult]] = {j: [] for j in job_ids}
            newest, left = sorted(found, reverse=True), limit
            # In batches: SQLite takes at most 32,766 parameters in a statement.
            for start in range(0, len(newest), 500):
                batch = newest[start:start + 500]
                # Named: without statistics SQLite may take another index on job_id.
                rows = sql.all(
                    "SELECT job_id, name, outcome, substr(message, 1, 300), duration FROM tests"
                    " INDEXED BY tests_failing WHERE outcome IN ('failed', 'errored')"
                    f" AND job_id IN ({','.join('?' * len(batch))})"
                    " ORDER BY job_id DESC, rowid LIMIT ?", *batch, left)
                for r in rows:
                    found[r[0]].append(TestResult(r[1], TestOutcome(r[2]), r[3], r[4]))
                if (left := left - len(rows)) <= 0:
                    break
            return found

        return await self._db.read(failing)

    async def slowest_tests(self, job_ids: Iterable[int], limit: int = 20
                            ) -> list[tuple[int, TestResult]]:
        """The `limit` longest tests of the given jobs, longest first: each job's own top
        from the (job, duration) index, merged."""

        def slowest(sql: Sql) -> list[tuple[int, TestResult]]:
            return [(job_id, TestResult(r[0], TestOutcome(r[1]), r[2], r[3]))
                    for job_id in job_ids for r in sql.all(
                        "SELECT name, outcome, message, duration FROM tests WHERE job_id = ?"
                        " AND duration > 0 ORDER BY duration DESC LIMIT ?", job_id, limit)]

        found = await self._db.read(slowest)
        return sorted(found, key=lambda f: -f[1].duration)[:limit]


def _tests(sql: Sql, job_id: int) -> list[TestResult]:
    rows = sql.all(
        "SELECT name, outcome, message FROM tests WHERE job_id = ? ORDER BY rowid", job_id)
    return [TestResult(r[0], TestOutcome(r[1]), r[2]) for r in rows]
