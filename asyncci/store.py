"""The store: the single source of truth, and the only module that speaks SQL.

One SQLite file in WAL mode, one connection. Every state change is a guarded
`UPDATE … WHERE state = ?` committed before anyone acts on it, and the outbox row that
reports it is written in the same transaction. Triggers are deduplicated by a unique
`trigger_key`. Nothing here knows about hosts, git or HTTP.

The legal job transitions, each one guarded UPDATE (a wrong prior state changes nothing):

    enqueue_build   (new) → queued, or → errored when the build could not be planned
    claim_job       queued → running (attempt + 1); a job whose cancel is pending → cancelled
    finish_job      running → passed | failed | errored | cancelled (its current attempt only)
    requeue_job     running → queued (its current attempt only); → cancelled if a cancel is
                    pending: a job somebody stopped is never run again
    cancel_*        queued → cancelled; running stays running with its cancel pending, and
                    the scheduler stops it, which ends in finish_job or requeue_job
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiosqlite

from .model import (Approval, Artifact, Attempt, Build, Event, Job, JobSpec, JobState,
                    TestOutcome, TestReport, TestResult, build_state, iso, utcnow)

PLAN_JOB = "pipeline"  # the job that carries the reason of a build that could not be planned
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE builds (
        id INTEGER PRIMARY KEY,
        repo TEXT NOT NULL,
        ref TEXT NOT NULL,
        sha TEXT NOT NULL,
        event TEXT NOT NULL,
        pr INTEGER,
        message TEXT NOT NULL DEFAULT '',
        author TEXT NOT NULL DEFAULT '',
        fork INTEGER NOT NULL DEFAULT 0,
        github TEXT,
        trigger_key TEXT UNIQUE,
        pipeline TEXT NOT NULL,
        error TEXT,
        state TEXT NOT NULL,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    CREATE INDEX builds_repo_ref ON builds (repo, ref, id);
    CREATE INDEX builds_state ON builds (state, id);
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        build_id INTEGER NOT NULL REFERENCES builds (id),
        name TEXT NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        host TEXT,
        slot INTEGER,
        attempt INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER,
        reason TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        log_expired INTEGER NOT NULL DEFAULT 0,
        queued_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    CREATE INDEX jobs_build ON jobs (build_id);
    CREATE INDEX jobs_active ON jobs (state) WHERE state IN ('queued', 'running');
    CREATE INDEX jobs_log_kept ON jobs (finished_at) WHERE log_expired = 0;
    CREATE TABLE attempts (
        job_id INTEGER NOT NULL REFERENCES jobs (id),
        number INTEGER NOT NULL,
        host TEXT NOT NULL,
        slot INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        outcome TEXT,
        reason TEXT,
        PRIMARY KEY (job_id, number)
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES jobs (id),
        state TEXT NOT NULL,
        created_at TEXT NOT NULL,
        sent_at TEXT
    );
    CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
    CREATE TABLE hosts (name TEXT PRIMARY KEY, drained INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE repos (name TEXT PRIMARY KEY, poll_error TEXT, polled_at TEXT);
    CREATE TABLE heads (
        repo TEXT NOT NULL, ref TEXT NOT NULL, sha TEXT NOT NULL, PRIMARY KEY (repo, ref)
    );
    """,
    # A repo's page lists its newest builds and each ref's newest build; at 100k builds
    # sorting or grouping them all took tens of milliseconds a page.
    """
    CREATE INDEX builds_repo ON builds (repo, id);
    CREATE TABLE refs (
        repo TEXT NOT NULL, ref TEXT NOT NULL, build_id INTEGER NOT NULL REFERENCES builds (id),
        PRIMARY KEY (repo, ref)
    );
    CREATE INDEX refs_newest ON refs (repo, build_id);
    INSERT INTO refs SELECT repo, ref, MAX(id) FROM builds GROUP BY repo, ref;
    """,
    # What jobs leave behind: artifacts, and test outcomes compared with the base branch's.
    """
    ALTER TABLE builds ADD COLUMN base_ref TEXT;
    -- Kept beside the tests rows, so finding the base branch's newest job with results
    -- skips the jobs without any instead of counting rows for each.
    ALTER TABLE jobs ADD COLUMN test_count INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE artifacts (
        job_id INTEGER NOT NULL REFERENCES jobs (id), path TEXT NOT NULL,
        size INTEGER NOT NULL, PRIMARY KEY (job_id, path)
    );
    CREATE TABLE tests (
        job_id INTEGER NOT NULL REFERENCES jobs (id), name TEXT NOT NULL,
        outcome TEXT NOT NULL, message TEXT NOT NULL
    );
    CREATE INDEX tests_job ON tests (job_id);
    CREATE INDEX tests_name ON tests (name, job_id);
    """,
    # SPEC §5a: whether a build's code is trusted, and a fork's wait for approval.
    """
    ALTER TABLE builds ADD COLUMN untrusted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE builds ADD COLUMN approval TEXT;
    UPDATE builds SET untrusted = fork;
    """,
    # Hardening: kills owed to hosts, status texts as they were at their transition, and
    # login sessions that a logout really ends.
    """
    ALTER TABLE attempts ADD COLUMN kill_pending INTEGER NOT NULL DEFAULT 0;
    UPDATE attempts SET kill_pending = 1 WHERE outcome = 'requeued'
        AND job_id IN (SELECT id FROM jobs WHERE state IN ('queued', 'running'));
    CREATE INDEX attempts_kill ON attempts (host) WHERE kill_pending = 1;
    -- What a status says beside its state (a host, a reason, a queue position).
    ALTER TABLE outbox ADD COLUMN detail TEXT;
    CREATE TABLE sessions (key TEXT PRIMARY KEY, expires_at TEXT NOT NULL);
    """,
    # The build page and the lists people browse: which build a rebuild repeats, how long
    # each test took, and indexes that keep the ETA, the filtered lists and the tests page
    # to a few index pages at 100k builds instead of a scan.
    """
    ALTER TABLE builds ADD COLUMN rebuild_of INTEGER REFERENCES builds (id);
    CREATE INDEX builds_rebuilds ON builds (rebuild_of) WHERE rebuild_of IS NOT NULL;
    CREATE INDEX builds_passed ON builds (repo, ref, id) WHERE state = 'passed';
    CREATE INDEX builds_event ON builds (event, id);
    CREATE INDEX builds_ref ON builds (ref, id);
    ALTER TABLE tests ADD COLUMN duration REAL NOT NULL DEFAULT 0;
    CREATE INDEX tests_failing ON tests (job_id) WHERE outcome IN ('failed', 'errored');
    CREATE INDEX tests_slowest ON tests (job_id, duration);
    """,
)
# The tests page looks this far back: flakiness and "new" are questions about recent runs.
RECENT_BUILDS = 200


@dataclass(frozen=True)
class BuildRequest:
    """What a trigger asks for; `trigger_key` None means "always a new build" (manual)."""

    repo: str
    ref: str
    sha: str
    event: Event
    trigger_key: str | None
    pr: int | None = None
    # A manual build of a branch head takes that head's automatic key when no build has it
    # yet, so the poller or a push seeing the same commit makes no second build.
    claim_key: str | None = None
    message: str = ""
    author: str = ""
    fork: bool = False
    untrusted: bool = False
    approval: Approval | None = None
    github: str | None = None
    base_ref: str | None = None  # what test results are compared with
    rebuild_of: int | None = None  # the build this one repeats


@dataclass
class Enqueued:
    build: Build
    created: bool
    cancelled: list[int] = field(default_factory=list)  # queued jobs of superseded builds
    stopping: list[int] = field(default_factory=list)  # running jobs asked to stop


@dataclass(frozen=True)
class ActiveJob:
    """A queued or running job with what the scheduler needs of its build."""

    job: Job
    build: Build


@dataclass(frozen=True)
class OutboxItem:
    id: int
    job: Job
    build: Build
    github: str
    state: JobState
    detail: str | None  # as it was at the transition: the host, the reason, the wait


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
class BuildTime:
    """A finished build's state and times: one bar of a repo's history strip."""

    id: int
    state: JobState
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class ResultJob:
    """A finished job that left test results, and the commit its build built."""

    job_id: int
    name: str
    build_id: int
    ref: str
    sha: str


@dataclass(frozen=True)
class RepoStatus:
    poll_error: str | None
    polled_at: datetime | None


class Store:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        # One connection: a transaction must not interleave with another coroutine's.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        # SQLite gives its -wal and -shm files the database file's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        db = await aiosqlite.connect(path, isolation_level=None)
        db.row_factory = sqlite3.Row
        store = cls(db)
        try:
            await store._migrate()
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        await self._db.close()

    async def _migrate(self) -> None:
        await self._db.execute("PRAGMA journal_mode = WAL")
        # NORMAL loses nothing on a process crash, only on power loss (DESIGN cost notes).
        await self._db.execute("PRAGMA synchronous = NORMAL")
        await self._db.execute("PRAGMA foreign_keys = ON")
        await self._db.execute("PRAGMA busy_timeout = 5000")
        row = await self._one("PRAGMA user_version")
        version = row[0] if row else 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            async with self._tx():
                for statement in filter(str.strip, script.split(";")):
                    await self._db.execute(statement)
                await self._db.execute(f"PRAGMA user_version = {number}")

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[None]:
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        await self._db.execute("COMMIT")

    async def _one(self, sql: str, *args: object) -> sqlite3.Row | None:
        async with self._db.execute(sql, args) as cur:
            return await cur.fetchone()

    async def _all(self, sql: str, *args: object) -> list[sqlite3.Row]:
        async with self._db.execute(sql, args) as cur:
            return list(await cur.fetchall())

    # -- builds ---------------------------------------------------------------------

    async def enqueue_build(
        self, req: BuildRequest, specs: Sequence[JobSpec], supersede: bool,
        error: str | None = None,
    ) -> Enqueued:
        """Insert a build and its queued jobs, unless its trigger_key exists already.
        A build that could not be planned (no `specs`, and the `error` why) is stored
        errored.

        With `supersede`, older unfinished builds of the same repo and ref are cancelled
        in the same transaction: queued jobs at once, running ones marked to be stopped.
        """
        now = iso(utcnow())
        async with self._lock, self._tx():
            if req.trigger_key is not None:
                row = await self._one(
                    "SELECT id FROM builds WHERE trigger_key = ?", req.trigger_key
                )
                if row is not None:
                    existing = await self._build(row["id"])
                    assert existing is not None
                    return Enqueued(existing, created=False)
            key = req.trigger_key
            if key is None and req.claim_key is not None and not await self._one(
                    "SELECT 1 FROM builds WHERE trigger_key = ?", req.claim_key):
                key = req.claim_key
            pipeline = json.dumps([s.to_dict() for s in specs])
            reason = None if specs else error or "the build has no jobs"
            state = JobState.ERRORED if reason else JobState.QUEUED
            cur = await self._db.execute(
                "INSERT INTO builds (repo, ref, sha, event, pr, message, author, fork,"
                " untrusted, approval, github, base_ref, rebuild_of, trigger_key, pipeline,"
                " error, state, created_at, finished_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (req.repo, req.ref, req.sha, str(req.event), req.pr, req.message,
                 req.author, int(req.fork), int(req.untrusted), req.approval and str(req.approval),
                 req.github, req.base_ref, req.rebuild_of, key, pipeline, reason, str(state),
                 now, now if reason else None),
            )
            build_id = cur.lastrowid
            assert build_id is not None
            await self._db.execute(
                "INSERT INTO refs (repo, ref, build_id) VALUES (?,?,?)"
                " ON CONFLICT (repo, ref) DO UPDATE SET build_id = excluded.build_id",
                (req.repo, req.ref, build_id),
            )
            # A build that could not be planned gets one errored job, named "pipeline": its
            # reason shows where jobs are looked at, and GitHub gets an error status for it.
            jobs = specs or [JobSpec(PLAN_JOB, "")]
            await self._db.executemany(
                "INSERT INTO jobs (build_id, name, spec, state, reason, queued_at, finished_at)"
                " VALUES (?,?,?,?,?,?,?)",
                [(build_id, s.name, json.dumps(s.to_dict()), str(state), reason, now,
                  now if reason else None) for s in jobs],
            )
            job_ids = await self._all("SELECT id FROM jobs WHERE build_id = ?", build_id)
            await self._outbox_rows([r[0] for r in job_ids], state, reason)
            created = await self._build(build_id)
            assert created is not None
            result = Enqueued(created, created=True)
            if supersede:
                # What a person asked for (manual) is never superseded automatically.
                older = (
                    "SELECT id FROM builds WHERE repo = ? AND ref = ? AND id < ?"
                    " AND sha != ? AND event != 'manual'"
                )
                result.cancelled, result.stopping = await self._cancel_jobs(
                    f"build_id IN ({older})", (req.repo, req.ref, build_id, req.sha),
                    f"superseded by build {build_id}",
                )
        return result

    async def approve_build(self, build_id: int) -> Build | None:
        """waiting → approved; the build, or None if it was not waiting. Its queued jobs'
        statuses are told again: they no longer wait for a person."""
        async with self._lock, self._tx():
            row = await self._one(
                "UPDATE builds SET approval = 'approved' WHERE id = ? AND approval = 'waiting'"
                " RETURNING id", build_id)
            if row is None:
                return None
            queued = await self._all(
                "SELECT id FROM jobs WHERE build_id = ? AND state = 'queued'", build_id)
            await self._outbox_rows([r[0] for r in queued], JobState.QUEUED)
            return await self._build(build_id)

    async def cancel_build(self, build_id: int, reason: str) -> tuple[list[int], list[int]]:
        """Cancel queued jobs now and mark running ones to be stopped; (cancelled, stopping)."""
        async with self._lock, self._tx():
            return await self._cancel_jobs("build_id = ?", (build_id,), reason)

    async def cancel_ref(self, repo: str, ref: str, reason: str) -> tuple[list[int], list[int]]:
        """Every unfinished build of a ref (a closed pull request)."""
        async with self._lock, self._tx():
            return await self._cancel_jobs(
                "build_id IN (SELECT id FROM builds WHERE repo = ? AND ref = ?)",
                (repo, ref), reason,
            )

    async def _cancel_jobs(
        self, where: str, args: tuple[object, ...], reason: str
    ) -> tuple[list[int], list[int]]:
        now = iso(utcnow())
        rows = await self._all(
            f"UPDATE jobs SET state = 'cancelled', reason = ?, finished_at = ?"
            f" WHERE state = 'queued' AND {where} RETURNING id, build_id",
            reason, now, *args,
        )
        stopping = await self._all(
            f"UPDATE jobs SET cancel_requested = 1, reason = ?"
            f" WHERE state = 'running' AND cancel_requested = 0 AND {where} RETURNING id",
            reason, *args,
        )
        await self._outbox_rows([r["id"] for r in rows], JobState.CANCELLED, reason)
        await self._refresh_builds({r["build_id"] for r in rows})
        return [r["id"] for r in rows], [r["id"] for r in stopping]

    async def last_trigger_key(self, repo: str, event: Event) -> str | None:
        async with self._lock:
            row = await self._one(
                "SELECT trigger_key FROM builds WHERE repo = ? AND event = ?"
                " ORDER BY id DESC LIMIT 1", repo, str(event))
        return None if row is None else row[0]

    async def latest_finished_state(self, repo: str, ref: str | None) -> JobState | None:
        """The state of the newest finished build of a repo (or of one ref): badges."""
        where, args = "repo = ? AND finished_at IS NOT NULL", [repo]
        if ref is not None:
            where, args = where + " AND ref = ?", args + [ref]
        async with self._lock:
            row = await self._one(
                f"SELECT state FROM builds WHERE {where} ORDER BY id DESC LIMIT 1", *args)
        return None if row is None else JobState(row[0])

    async def latest_per_ref(self, repo: str, limit: int = 50) -> list[Build]:
        """The newest build of each of a repo's refs, most recently built refs first."""
        async with self._lock:
            rows = await self._all(
                "SELECT b.* FROM refs r JOIN builds b ON b.id = r.build_id"
                " WHERE r.repo = ? ORDER BY r.build_id DESC LIMIT ?", repo, limit)
            return await self._with_jobs(rows)

    async def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Builds and jobs by state."""
        async with self._lock:
            builds = await self._all("SELECT state, COUNT(*) FROM builds GROUP BY state")
            jobs = await self._all("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {r[0]: r[1] for r in builds}, {r[0]: r[1] for r in jobs}

    async def histograms(self, buckets: Sequence[float]) -> dict[str, tuple[list[int], float, int]]:
        """Cumulative (bucket counts, sum, count) of the queue wait of every started job
        and the duration of every finished one, straight from the truth, so a restart
        loses no observation."""
        seconds = {
            "wait": "(julianday(started_at) - julianday(queued_at)) * 86400",
            "duration": "(julianday(finished_at) - julianday(started_at)) * 86400",
        }
        where = {"wait": "started_at IS NOT NULL",
                 "duration": "started_at IS NOT NULL AND finished_at IS NOT NULL"}
        result = {}
        async with self._lock:
            for name, expr in seconds.items():
                columns = ", ".join(f"SUM({expr} <= {b!r})" for b in buckets)
                row = await self._one(
                    f"SELECT {columns}, SUM({expr}), COUNT(*) FROM jobs WHERE {where[name]}")
                assert row is not None
                values = [v or 0 for v in row]
                result[name] = (values[:-2], float(values[-2]), int(values[-1]))
        return result

    async def last_passed(self, repo: str, ref: str, before: int) -> Build | None:
        """The newest passing build of a ref older than build `before`: what a running
        build's ETA is measured against (a partial index holds passing builds only)."""
        async with self._lock:
            row = await self._one(
                "SELECT * FROM builds WHERE repo = ? AND ref = ? AND state = 'passed'"
                " AND id < ? ORDER BY id DESC LIMIT 1", repo, ref, before)
            return None if row is None else (await self._with_jobs([row]))[0]

    async def build_times(self, repo: str, ref: str | None, limit: int = 40) -> list[BuildTime]:
        """The state and times of a repo's (or one ref's) last `limit` finished builds,
        newest first, without their jobs: a history strip."""
        where, args = ("repo = ? AND ref = ?", (repo, ref)) if ref else ("repo = ?", (repo,))
        async with self._lock:
            rows = await self._all(
                f"SELECT id, state, started_at, finished_at FROM builds WHERE {where}"
                " AND finished_at IS NOT NULL ORDER BY id DESC LIMIT ?", *args, limit)
        return [BuildTime(r[0], JobState(r[1]), _time(r[2]), _time(r[3])) for r in rows]

    async def rebuilds_of(self, build_id: int) -> list[int]:
        """The builds that repeat `build_id`, oldest first."""
        async with self._lock:
            rows = await self._all(
                "SELECT id FROM builds WHERE rebuild_of = ? ORDER BY id LIMIT 20", build_id)
        return [r[0] for r in rows]

    async def newest_build_id(self) -> int:
        """The highest build id so far, 0 before the first build."""
        async with self._lock:
            row = await self._one("SELECT MAX(id) FROM builds")
        return int(row[0] or 0) if row else 0

    async def get_build(self, build_id: int) -> Build | None:
        async with self._lock:
            return await self._build(build_id)

    async def build_pipeline(self, build_id: int) -> list[JobSpec] | None:
        async with self._lock:
            row = await self._one("SELECT pipeline FROM builds WHERE id = ?", build_id)
        return None if row is None else [JobSpec.from_dict(d) for d in json.loads(row[0])]

    async def list_builds(
        self,
        repo: str | None = None,
        state: str | None = None,
        ref: str | None = None,
        limit: int = 50,
        before: int | None = None,
        event: str | None = None,
        after: int | None = None,
    ) -> list[Build]:
        """Builds newest first, with ids between `after` and `before` (both excluded)."""
        where: list[str] = ["1"]
        args: list[object] = []
        for column, value in (("repo", repo), ("state", state), ("ref", ref), ("event", event)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        for bound, build_id in (("id < ?", before), ("id > ?", after)):
            if build_id is not None:
                where.append(bound)
                args.append(build_id)
        async with self._lock:
            rows = await self._all(
                f"SELECT * FROM builds WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
                *args, limit,
            )
            return await self._with_jobs(rows)

    async def _build(self, build_id: int) -> Build | None:
        row = await self._one("SELECT * FROM builds WHERE id = ?", build_id)
        if row is None:
            return None
        return (await self._with_jobs([row]))[0]

    async def _with_jobs(self, rows: Sequence[sqlite3.Row]) -> list[Build]:
        builds = {r["id"]: _build_from(r) for r in rows}
        if builds:
            marks = ",".join("?" * len(builds))
            for j in await self._all(
                f"SELECT * FROM jobs WHERE build_id IN ({marks}) ORDER BY id", *builds
            ):
                builds[j["build_id"]].jobs.append(_job_from(j))
            attempts = await self._all(
                f"SELECT a.* FROM attempts a JOIN jobs j ON j.id = a.job_id"
                f" WHERE j.build_id IN ({marks}) ORDER BY a.job_id, a.number", *builds
            )
            by_job = {job.id: job for b in builds.values() for job in b.jobs}
            for a in attempts:
                by_job[a["job_id"]].attempts.append(_attempt_from(a))
        return list(builds.values())

    async def _refresh_builds(self, build_ids: Iterable[int]) -> None:
        """Derive each build's state and times from its jobs (SPEC §3)."""
        for build_id in build_ids:
            rows = await self._all(
                "SELECT state, started_at, finished_at FROM jobs WHERE build_id = ?", build_id
            )
            state = build_state(JobState(r["state"]) for r in rows)
            started = min((r["started_at"] for r in rows if r["started_at"]), default=None)
            finished = (
                max((r["finished_at"] or "" for r in rows), default=None)
                if state.finished else None
            )
            await self._db.execute(
                "UPDATE builds SET state = ?, started_at = ?, finished_at = ? WHERE id = ?",
                (str(state), started, finished, build_id),
            )

    # -- jobs -----------------------------------------------------------------------

    async def get_job(self, job_id: int) -> Job | None:
        async with self._lock:
            row = await self._one("SELECT * FROM jobs WHERE id = ?", job_id)
            if row is None:
                return None
            job = _job_from(row)
            job.attempts = [
                _attempt_from(a)
                for a in await self._all(
                    "SELECT * FROM attempts WHERE job_id = ? ORDER BY number", job_id
                )
            ]
            return job

    async def active_jobs(self, job_ids: Sequence[int] | None = None) -> list[ActiveJob]:
        """Queued and running jobs (all, or those of `job_ids`), oldest first: what a
        restart rebuilds its queue from, and what a page of the queue shows."""
        where, args = "j.state IN ('queued', 'running')", list(job_ids or ())
        if job_ids is not None:
            where += f" AND j.id IN ({','.join('?' * len(args))})"
        async with self._lock:
            rows = await self._all(
                "SELECT j.*, b.repo AS b_repo, b.ref AS b_ref, b.sha AS b_sha,"
                " b.event AS b_event, b.pr AS b_pr, b.fork AS b_fork, b.created_at AS b_created,"
                " b.untrusted AS b_untrusted, b.approval AS b_approval"
                f" FROM jobs j JOIN builds b ON b.id = j.build_id WHERE {where} ORDER BY j.id",
                *args)
        return [ActiveJob(_job_from(r), _build_head(r)) for r in rows]

    async def claim_job(self, job_id: int, host: str, slot: int) -> ActiveJob | None:
        """queued → running on (host, slot), counting the attempt now: a crash after this
        leaves a running job that recovery reattaches or re-queues, never a lost one."""
        now = iso(utcnow())
        async with self._lock, self._tx():
            row = await self._one(
                "UPDATE jobs SET state = 'running', host = ?, slot = ?, attempt = attempt + 1,"
                " started_at = ?, reason = NULL WHERE id = ? AND state = 'queued'"
                " AND cancel_requested = 0 RETURNING *",
                host, slot, now, job_id,
            )
            if row is None:
                await self._drop_cancelled(job_id, now)
                return None
            await self._db.execute(
                "INSERT INTO attempts (job_id, number, host, slot, started_at) VALUES (?,?,?,?,?)",
                (job_id, row["attempt"], host, slot, now),
            )
            await self._outbox_rows([job_id], JobState.RUNNING, host)
            await self._refresh_builds([row["build_id"]])
            build = await self._one("SELECT * FROM builds WHERE id = ?", row["build_id"])
        assert build is not None
        return ActiveJob(_job_from(row), _build_from(build))

    async def drop_cancelled(self, job_id: int) -> None:
        """At a restart: such a job may never be claimed (no host takes it), so waiting
        for claim_job to end it could leave its build open for good."""
        async with self._lock, self._tx():
            await self._drop_cancelled(job_id, iso(utcnow()))

    async def _drop_cancelled(self, job_id: int, now: str | None) -> None:
        """queued with a pending cancel → cancelled: an older release re-queued jobs
        somebody had stopped, and claim_job refuses them."""
        row = await self._one(
            "UPDATE jobs SET state = 'cancelled', finished_at = ?, cancel_requested = 0"
            " WHERE id = ? AND state = 'queued' AND cancel_requested = 1"
            " RETURNING build_id, reason", now, job_id)
        if row is not None:
            await self._outbox_rows([job_id], JobState.CANCELLED, row["reason"])
            await self._refresh_builds([row["build_id"]])

    async def finish_job(
        self, job_id: int, attempt: int, state: JobState,
        exit_code: int | None = None, reason: str | None = None,
        artifacts: Sequence[Artifact] = (), tests: Sequence[TestResult] = (),
        kill_owed: bool = False,
    ) -> bool:
        """running → a final state, only if this attempt is still the job's current one;
        what the attempt left behind is kept in the same transaction."""
        assert state.finished
        now = iso(utcnow())
        async with self._lock, self._tx():
            row = await self._one(
                "UPDATE jobs SET state = ?, exit_code = ?, reason = ?, finished_at = ?,"
                " test_count = ? WHERE id = ? AND state = 'running' AND attempt = ?"
                " RETURNING build_id",
                str(state), exit_code, reason, now, len(tests), job_id, attempt,
            )
            if row is None:
                return False
            await self._db.executemany(
                "INSERT INTO artifacts (job_id, path, size) VALUES (?,?,?)",
                [(job_id, a.path, a.size) for a in artifacts])
            await self._db.executemany(
                "INSERT INTO tests (job_id, name, outcome, message, duration) VALUES (?,?,?,?,?)",
                [(job_id, t.name, str(t.outcome), t.message, t.duration) for t in tests])
            await self._end_attempt(job_id, attempt, str(state), reason, now, kill_owed)
            await self._outbox_rows([job_id], state, reason)
            await self._refresh_builds([row["build_id"]])
        return True

    async def requeue_job(self, job_id: int, attempt: int, reason: str,
                          kill_owed: bool = False) -> JobState | None:
        """running → queued after an infrastructure error, or → cancelled if somebody
        asked to stop it meanwhile; None if `attempt` is no longer the job's current one.
        With `kill_owed`, the attempt may still run on a host that could not be reached."""
        now = iso(utcnow())
        async with self._lock, self._tx():
            state, row = JobState.CANCELLED, await self._one(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?, cancel_requested = 0"
                " WHERE id = ? AND state = 'running' AND attempt = ? AND cancel_requested = 1"
                " RETURNING build_id, reason", now, job_id, attempt)
            if row is None:
                state, row = JobState.QUEUED, await self._one(
                    "UPDATE jobs SET state = 'queued', host = NULL, slot = NULL, reason = ?,"
                    " started_at = NULL WHERE id = ? AND state = 'running' AND attempt = ?"
                    " RETURNING build_id, reason", reason, job_id, attempt)
            if row is None:
                return None
            await self._end_attempt(job_id, attempt, "requeued" if state is JobState.QUEUED
                                    else "cancelled", reason, now, kill_owed)
            await self._outbox_rows([job_id], state,
                                    row["reason"] if state is JobState.CANCELLED else None)
            await self._refresh_builds([row["build_id"]])
        return state

    async def _end_attempt(self, job_id: int, attempt: int, outcome: str, reason: str | None,
                           now: str | None, kill_owed: bool) -> None:
        await self._db.execute(
            "UPDATE attempts SET finished_at = ?, outcome = ?, reason = ?, kill_pending = ?"
            " WHERE job_id = ? AND number = ?",
            (now, outcome, reason, int(kill_owed), job_id, attempt),
        )

    async def artifacts(self, job_id: int) -> list[Artifact]:
        async with self._lock:
            rows = await self._all(
                "SELECT path, size FROM artifacts WHERE job_id = ? ORDER BY path", job_id)
        return [Artifact(r[0], r[1]) for r in rows]

    async def test_report(self, job_id: int) -> TestReport | None:
        """A job's test results against the newest results of the job of the same name on
        its build's base branch from before it (SPEC §7): what a pull request is told does
        not change as the base branch moves on. None for an unknown job."""
        async with self._lock:
            job = await self._one(
                "SELECT j.name, b.id, b.repo, b.base_ref FROM jobs j"
                " JOIN builds b ON b.id = j.build_id WHERE j.id = ?", job_id)
            if job is None:
                return None
            results = await self._tests(job_id)
            base = None
            if job["base_ref"] is not None and results:
                base = await self._one(
                    "SELECT j.id, j.build_id FROM builds b JOIN jobs j ON j.build_id = b.id"
                    " WHERE b.repo = ? AND b.ref = ? AND b.id < ? AND j.name = ?"
                    " AND j.test_count > 0 ORDER BY b.id DESC LIMIT 1",
                    job["repo"], job["base_ref"], job["id"], job["name"])
            base_results = await self._tests(base["id"]) if base else []
        return TestReport.compare(results, job["base_ref"], base["build_id"] if base else None,
                                  base_results)

    async def _tests(self, job_id: int) -> list[TestResult]:
        rows = await self._all(
            "SELECT name, outcome, message FROM tests WHERE job_id = ? ORDER BY rowid", job_id)
        return [TestResult(r[0], TestOutcome(r[1]), r[2]) for r in rows]

    async def test_history(self, repo: str, job: str, test: str, limit: int = 50
                           ) -> list[TestRun]:
        """A test's outcomes in a repo's jobs of one name, newest first."""
        async with self._lock:
            rows = await self._all(
                "SELECT b.id, j.id, b.ref, b.sha, t.outcome, t.message, j.finished_at"
                " FROM tests t JOIN jobs j ON j.id = t.job_id JOIN builds b ON b.id = j.build_id"
                " WHERE t.name = ? AND j.name = ? AND b.repo = ? ORDER BY t.job_id DESC LIMIT ?",
                test, job, repo, limit)
        return [TestRun(r[0], r[1], r[2], r[3], TestOutcome(r[4]), r[5], _time(r[6]))
                for r in rows]

    async def result_jobs(self, repo: str, ref: str | None = None,
                          builds: int = RECENT_BUILDS) -> list[ResultJob]:
        """The jobs with test results among a repo's (or one ref's) last `builds` builds,
        newest build first: the window the tests page reads, so its cost does not grow
        with the history."""
        where, args = ("repo = ? AND ref = ?", (repo, ref)) if ref else ("repo = ?", (repo,))
        async with self._lock:
            rows = await self._all(
                "SELECT j.id, j.name, b.id, b.ref, b.sha FROM"
                f" (SELECT id, ref, sha FROM builds WHERE {where} ORDER BY id DESC LIMIT ?) b"
                " JOIN jobs j ON j.build_id = b.id"
                " WHERE j.test_count > 0 AND j.finished_at IS NOT NULL ORDER BY b.id DESC, j.id",
                *args, builds)
        return [ResultJob(*r) for r in rows]

    async def failing_tests(self, job_ids: Collection[int], limit: int = 5000
                            ) -> dict[int, list[TestResult]]:
        """The failed and errored tests of each job, newest jobs first until `limit` rows,
        each message cut to its start (read through a partial index that holds failing
        rows only: a job's thousands of passing tests are never read)."""
        found: dict[int, list[TestResult]] = {j: [] for j in job_ids}
        newest = sorted(found, reverse=True)
        async with self._lock:
            # In batches: SQLite takes at most 32,766 parameters in a statement.
            for start in range(0, len(newest), 500):
                batch = newest[start:start + 500]
                # Named: without statistics SQLite may take another index on job_id.
                rows = await self._all(
                    "SELECT job_id, name, outcome, substr(message, 1, 300), duration FROM tests"
                    " INDEXED BY tests_failing WHERE outcome IN ('failed', 'errored')"
                    f" AND job_id IN ({','.join('?' * len(batch))})"
                    " ORDER BY job_id DESC, rowid LIMIT ?", *batch, limit)
                for r in rows:
                    found[r[0]].append(TestResult(r[1], TestOutcome(r[2]), r[3], r[4]))
                if (limit := limit - len(rows)) <= 0:
                    break
        return found

    async def slowest_tests(self, job_ids: Iterable[int], limit: int = 20
                            ) -> list[tuple[int, TestResult]]:
        """The `limit` longest tests of the given jobs, longest first: each job's own top
        from the (job, duration) index, merged."""
        found: list[tuple[int, TestResult]] = []
        async with self._lock:
            for job_id in job_ids:
                rows = await self._all(
                    "SELECT name, outcome, message, duration FROM tests WHERE job_id = ?"
                    " AND duration > 0 ORDER BY duration DESC LIMIT ?", job_id, limit)
                found += [(job_id, TestResult(r[0], TestOutcome(r[1]), r[2], r[3])) for r in rows]
        return sorted(found, key=lambda f: -f[1].duration)[:limit]

    async def owed_kills(self) -> list[tuple[int, Attempt]]:
        """(job id, attempt) of every attempt that may still run where it was given up on
        (its host was away) or asked to stop (the kill did not reach its host)."""
        async with self._lock:
            rows = await self._all("SELECT * FROM attempts WHERE kill_pending = 1")
        return [(r["job_id"], _attempt_from(r)) for r in rows]

    async def owe_kill(self, job_id: int, attempt: int, owed: bool = True) -> None:
        """Remember (or, once it reached its host, forget) that an attempt is to be killed."""
        async with self._lock:
            await self._db.execute(
                "UPDATE attempts SET kill_pending = ? WHERE job_id = ? AND number = ?",
                (int(owed), job_id, attempt))

    async def cancel_reason(self, job_id: int) -> str | None:
        """Why a running job was asked to stop, if it was."""
        async with self._lock:
            row = await self._one(
                "SELECT reason FROM jobs WHERE id = ? AND cancel_requested = 1", job_id)
        return None if row is None else str(row[0] or "cancelled")

    async def expire_logs(self, before: datetime) -> list[int]:
        """Jobs finished before `before` whose logs and artifacts are to be deleted (each
        named once); their artifacts are no longer listed from now on."""
        async with self._lock, self._tx():
            rows = await self._all(
                "UPDATE jobs SET log_expired = 1 WHERE log_expired = 0"
                " AND finished_at IS NOT NULL AND finished_at < ? RETURNING id", iso(before)
            )
            await self._db.executemany(
                "DELETE FROM artifacts WHERE job_id = ?", [(r[0],) for r in rows])
        return [r[0] for r in rows]

    # -- outbox ---------------------------------------------------------------------

    async def _outbox_rows(self, job_ids: Sequence[int], state: JobState,
                           detail: str | None = None) -> None:
        """Written in the caller's transaction, so a reported state is a committed one,
        told as it was then (a queued job's wait is added by `set_wait_details`)."""
        if not job_ids:
            return
        marks = ",".join("?" * len(job_ids))
        await self._db.execute(
            f"INSERT INTO outbox (job_id, state, detail, created_at)"
            f" SELECT j.id, ?, ?, ? FROM jobs j JOIN builds b ON b.id = j.build_id"
            f" WHERE j.id IN ({marks}) AND b.github IS NOT NULL",
            (str(state), detail, iso(utcnow()), *job_ids),
        )

    async def set_wait_details(self, details: Mapping[int, str]) -> None:
        """A just-queued job's position and wait reason, for its unsent `queued` status."""
        async with self._lock:
            await self._db.executemany(
                "UPDATE outbox SET detail = ? WHERE id = (SELECT MAX(id) FROM outbox"
                " WHERE job_id = ? AND state = 'queued') AND sent_at IS NULL AND detail IS NULL",
                [(text, job_id) for job_id, text in details.items()])

    async def pending_outbox(self, limit: int = 100) -> list[OutboxItem]:
        async with self._lock:
            rows = await self._all(
                "SELECT o.id AS o_id, o.state AS o_state, o.detail AS o_detail, j.*,"
                " b.github AS b_github,"
                " b.repo AS b_repo, b.ref AS b_ref, b.sha AS b_sha, b.event AS b_event,"
                " b.pr AS b_pr, b.fork AS b_fork, b.created_at AS b_created,"
                " b.untrusted AS b_untrusted, b.approval AS b_approval"
                " FROM outbox o JOIN jobs j ON j.id = o.job_id JOIN builds b ON b.id = j.build_id"
                " WHERE o.sent_at IS NULL ORDER BY o.id LIMIT ?",
                limit,
            )
        return [
            OutboxItem(r["o_id"], _job_from(r), _build_head(r), r["b_github"],
                       JobState(r["o_state"]), r["o_detail"])
            for r in rows
        ]

    async def mark_sent(self, outbox_id: int) -> None:
        async with self._lock:
            await self._db.execute(
                "UPDATE outbox SET sent_at = ? WHERE id = ?", (iso(utcnow()), outbox_id)
            )

    # -- login sessions -------------------------------------------------------------

    async def add_session(self, key: str, expires_at: datetime) -> None:
        async with self._lock:
            await self._db.execute("INSERT INTO sessions (key, expires_at) VALUES (?, ?)",
                                   (key, iso(expires_at)))

    async def drop_session(self, key: str) -> None:
        async with self._lock:
            await self._db.execute("DELETE FROM sessions WHERE key = ?", (key,))

    async def live_sessions(self) -> dict[str, datetime]:
        """Every session not yet expired (expired ones are deleted on the way)."""
        now = iso(utcnow())
        async with self._lock, self._tx():
            await self._db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            rows = await self._all("SELECT key, expires_at FROM sessions")
        return {r[0]: datetime.fromisoformat(r[1]) for r in rows}

    # -- hosts and repos ------------------------------------------------------------

    async def set_drained(self, host: str, drained: bool) -> None:
        async with self._lock:
            await self._db.execute(
                "INSERT INTO hosts (name, drained) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET drained = excluded.drained",
                (host, int(drained)),
            )

    async def drained_hosts(self) -> set[str]:
        async with self._lock:
            return {r[0] for r in await self._all("SELECT name FROM hosts WHERE drained = 1")}

    async def heads(self, repo: str) -> dict[str, str]:
        async with self._lock:
            rows = await self._all("SELECT ref, sha FROM heads WHERE repo = ?", repo)
        return {r["ref"]: r["sha"] for r in rows}

    async def set_heads(self, repo: str, heads: dict[str, str]) -> None:
        async with self._lock, self._tx():
            await self._db.execute("DELETE FROM heads WHERE repo = ?", (repo,))
            await self._db.executemany(
                "INSERT INTO heads (repo, ref, sha) VALUES (?,?,?)",
                [(repo, ref, sha) for ref, sha in heads.items()],
            )

    async def set_poll_result(self, repo: str, error: str | None) -> None:
        async with self._lock:
            await self._db.execute(
                "INSERT INTO repos (name, poll_error, polled_at) VALUES (?,?,?)"
                " ON CONFLICT (name) DO UPDATE SET poll_error = excluded.poll_error,"
                " polled_at = excluded.polled_at",
                (repo, error, iso(utcnow())),
            )

    async def repo_status(self, repo: str) -> RepoStatus:
        async with self._lock:
            row = await self._one("SELECT poll_error, polled_at FROM repos WHERE name = ?", repo)
        if row is None:
            return RepoStatus(None, None)
        return RepoStatus(row["poll_error"], _time(row["polled_at"]))


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _build_from(r: sqlite3.Row) -> Build:
    return Build(
        id=r["id"], repo=r["repo"], ref=r["ref"], sha=r["sha"], event=Event(r["event"]),
        state=JobState(r["state"]), created_at=datetime.fromisoformat(r["created_at"]),
        pr=r["pr"], message=r["message"], author=r["author"], fork=bool(r["fork"]),
        untrusted=bool(r["untrusted"]), approval=_approval(r["approval"]), error=r["error"],
        base_ref=r["base_ref"], rebuild_of=r["rebuild_of"], started_at=_time(r["started_at"]),
        finished_at=_time(r["finished_at"]),
    )


def _build_head(r: sqlite3.Row) -> Build:
    """The build columns that active_jobs and the outbox select beside a job row."""
    return Build(
        id=r["build_id"], repo=r["b_repo"], ref=r["b_ref"], sha=r["b_sha"],
        event=Event(r["b_event"]), state=JobState.RUNNING,
        created_at=datetime.fromisoformat(r["b_created"]), pr=r["b_pr"], fork=bool(r["b_fork"]),
        untrusted=bool(r["b_untrusted"]), approval=_approval(r["b_approval"]),
    )


def _approval(value: str | None) -> Approval | None:
    return None if value is None else Approval(value)


def _job_from(r: sqlite3.Row) -> Job:
    return Job(
        id=r["id"], build_id=r["build_id"], name=r["name"], state=JobState(r["state"]),
        spec=JobSpec.from_dict(json.loads(r["spec"])), host=r["host"], slot=r["slot"],
        attempt=r["attempt"], exit_code=r["exit_code"], reason=r["reason"],
        cancel_requested=bool(r["cancel_requested"]),
        queued_at=_time(r["queued_at"]), started_at=_time(r["started_at"]),
        finished_at=_time(r["finished_at"]),
    )


def _attempt_from(a: sqlite3.Row) -> Attempt:
    return Attempt(
        number=a["number"], host=a["host"], slot=a["slot"],
        started_at=datetime.fromisoformat(a["started_at"]),
        finished_at=_time(a["finished_at"]), outcome=a["outcome"], reason=a["reason"],
    )
