"""State changes: a build and its jobs enqueued, approved, cancelled; a job claimed,
finished, re-queued. Each is one transaction, run whole on the database thread, that moves
jobs along the edges of edges.py, writes the outbox rows that tell it, and derives the
states of the builds it touched."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence

from ..model import (ActiveJob, Build, BuildRequest, Enqueued, Event, JobSpec, JobState,
                     build_state, iso, utcnow)
from ..model.results import Artifact, TestResult
from .connection import Part, Sql
from .edges import (ASK_TO_STOP, BEGIN_ATTEMPT, CANCEL_QUEUED, CLAIM, DROP_CANCELLED,
                    END_ATTEMPT, FINISH, NEW_JOB, REQUEUE, STOPPED)
from .outbox import add_rows
from .rows import ACTIVE, active_from, load_build


class Transitions(Part):
    async def enqueue_build(
        self, req: BuildRequest, jobs: Sequence[JobSpec], supersede: Collection[Event] = (),
        error: str | None = None,
    ) -> Enqueued:
        """Insert a build and its jobs, unless a build has its trigger_key already. With
        `error` the build could not be planned: it and its jobs are stored errored with
        that reason, and with no pipeline for a rebuild to repeat.

        Older unfinished builds of the same repo and ref at another commit, made by one of
        the `supersede` events, are cancelled in the same transaction: queued jobs at once,
        running ones asked to stop."""
        assert jobs, "a build has at least one job"

        def enqueue(sql: Sql) -> Enqueued:
            if req.trigger_key is not None and (row := sql.one(
                    "SELECT id FROM builds WHERE trigger_key = ?", req.trigger_key)):
                return Enqueued(_loaded(sql, row["id"]), created=False)
            build_id = _insert_build(sql, req, jobs, error)
            result = Enqueued(_loaded(sql, build_id), created=True)
            if supersede:
                older = ("SELECT id FROM builds WHERE repo = ? AND ref = ? AND id < ?"
                         f" AND sha != ? AND event IN ({','.join('?' * len(supersede))})")
                result.cancelled, result.stopping = _cancel_jobs(
                    sql, older, (req.repo, req.ref, build_id, req.sha, *map(str, supersede)),
                    f"superseded by build {build_id}")
            return result

        return await self._db.write(enqueue)

    async def approve_build(self, build_id: int) -> Build | None:
        """waiting → approved; the build, or None if it was not waiting. Its queued jobs'
        statuses are told again: they no longer wait for a person."""

        def approve(sql: Sql) -> Build | None:
            if sql.one("UPDATE builds SET approval = 'approved' WHERE id = ?"
                       " AND approval = 'waiting' RETURNING id", build_id) is None:
                return None
            queued = sql.all(
                "SELECT id FROM jobs WHERE build_id = ? AND state = 'queued'", build_id)
            add_rows(sql, [r["id"] for r in queued], JobState.QUEUED)
            return load_build(sql, build_id)

        return await self._db.write(approve)

    async def cancel_build(self, build_id: int, reason: str) -> tuple[list[int], list[int]]:
        """Cancel queued jobs now and mark running ones to be stopped; (cancelled, stopping)."""
        return await self._db.write(lambda sql: _cancel_jobs(sql, "?", (build_id,), reason))

    async def cancel_ref(self, repo: str, ref: str, reason: str) -> tuple[list[int], list[int]]:
        """Every unfinished build of a ref (a closed pull request)."""
        return await self._db.write(lambda sql: _cancel_jobs(
            sql, "SELECT id FROM builds WHERE repo = ? AND ref = ?", (repo, ref), reason))

    async def claim_job(self, job_id: int, host: str, slot: int) -> ActiveJob | None:
        """queued → running on (host, slot), counting the attempt now: a crash after this
        leaves a running job that recovery reattaches or re-queues, never a lost one."""

        def claim(sql: Sql) -> ActiveJob | None:
            now = iso(utcnow())
            row = sql.one(CLAIM, host, slot, now, job_id)
            if row is None:
                _drop_cancelled(sql, job_id, now)
                return None
            sql.run(BEGIN_ATTEMPT, job_id, row["attempt"], host, slot, now)
            add_rows(sql, [job_id], JobState.RUNNING, host)
            _refresh_builds(sql, [row["build_id"]])
            claimed = sql.one(ACTIVE + " WHERE j.id = ?", job_id)
            assert claimed is not None
            return active_from(claimed)

        return await self._db.write(claim)

    async def drop_cancelled(self) -> None:
        """At a restart, every queued job with a pending cancel ends cancelled: such a job
        may never be claimed (no host takes it), so waiting for claim_job to end it could
        leave its build open for good."""

        def drop(sql: Sql) -> None:
            now = iso(utcnow())
            for row in sql.all(
                    "SELECT id FROM jobs WHERE state = 'queued' AND cancel_requested = 1"):
                _drop_cancelled(sql, row["id"], now)

        await self._db.write(drop)

    async def finish_job(
        self, job_id: int, attempt: int, state: JobState,
        exit_code: int | None = None, reason: str | None = None,
        artifacts: Sequence[Artifact] = (), tests: Sequence[TestResult] = (),
        kill_owed: bool = False,
    ) -> bool:
        """running → a final state, only if this attempt is still the job's current one;
        what the attempt left behind is kept in the same transaction."""
        assert state.finished

        def finish(sql: Sql) -> bool:
            now = iso(utcnow())
            row = sql.one(FINISH, str(state), exit_code, reason, now, len(tests), job_id, attempt)
            if row is None:
                return False
            sql.many("INSERT INTO artifacts (job_id, path, size) VALUES (?,?,?)",
                     [(job_id, a.path, a.size) for a in artifacts])
            sql.many(
                "INSERT INTO tests (job_id, name, outcome, message, duration) VALUES (?,?,?,?,?)",
                [(job_id, t.name, str(t.outcome), t.message, t.duration) for t in tests])
            sql.run(END_ATTEMPT, now, str(state), reason, int(kill_owed), job_id, attempt)
            add_rows(sql, [job_id], state, reason)
            _refresh_builds(sql, [row["build_id"]])
            return True

        return await self._db.write(finish)

    async def requeue_job(self, job_id: int, attempt: int, reason: str,
                          kill_owed: bool = False) -> JobState | None:
        """running → queued after an infrastructure error, or → cancelled if somebody
        asked to stop it meanwhile; None if `attempt` is no longer the job's current one.
        With `kill_owed`, the attempt may still run on a host that could not be reached."""

        def requeue(sql: Sql) -> JobState | None:
            now = iso(utcnow())
            state, told = JobState.CANCELLED, sql.one(STOPPED, now, job_id, attempt)
            if told is None:
                state, told = JobState.QUEUED, sql.one(REQUEUE, reason, job_id, attempt)
            if told is None:
                return None
            cancelled = state is JobState.CANCELLED
            sql.run(END_ATTEMPT, now, "cancelled" if cancelled else "requeued", reason,
                    int(kill_owed), job_id, attempt)
            add_rows(sql, [job_id], state, told["reason"] if cancelled else None)
            _refresh_builds(sql, [told["build_id"]])
            return state

        return await self._db.write(requeue)


def _loaded(sql: Sql, build_id: int) -> Build:
    build = load_build(sql, build_id)
    assert build is not None
    return build


def _insert_build(sql: Sql, req: BuildRequest, jobs: Sequence[JobSpec], error: str | None
                  ) -> int:
    """The build, its place as its ref's newest, its jobs and their outbox rows."""
    now = iso(utcnow())
    key = req.trigger_key
    if key is None and req.claim_key is not None and not sql.one(
            "SELECT 1 FROM builds WHERE trigger_key = ?", req.claim_key):
        key = req.claim_key
    state = JobState.ERRORED if error else JobState.QUEUED
    pipeline = json.dumps([] if error else [s.to_dict() for s in jobs])
    build_id = sql.run(
        "INSERT INTO builds (repo, ref, sha, event, pr, message, author, fork, untrusted,"
        " approval, github, base_ref, rebuild_of, cron_slot, trigger_key, pipeline, error,"
        " state, created_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        req.repo, req.ref, req.sha, str(req.event), req.pr, req.message, req.author,
        int(req.fork), int(req.untrusted), req.approval and str(req.approval), req.github,
        req.base_ref, req.rebuild_of, iso(req.cron_slot), key, pipeline, error, str(state),
        now, now if error else None).lastrowid
    assert build_id is not None
    sql.run("INSERT INTO refs (repo, ref, build_id) VALUES (?,?,?)"
            " ON CONFLICT (repo, ref) DO UPDATE SET build_id = excluded.build_id",
            req.repo, req.ref, build_id)
    sql.many(NEW_JOB, [(build_id, s.name, json.dumps(s.to_dict()), str(state), error, now,
                        now if error else None) for s in jobs])
    job_ids = sql.all("SELECT id FROM jobs WHERE build_id = ?", build_id)
    add_rows(sql, [r["id"] for r in job_ids], state, error)
    return build_id


def _cancel_jobs(sql: Sql, builds: str, args: tuple[object, ...], reason: str
                 ) -> tuple[list[int], list[int]]:
    """The jobs of `builds` (a SELECT of build ids, or `?`): (queued ones cancelled now,
    running ones asked to stop)."""
    cancelled = sql.all(CANCEL_QUEUED.format(builds=builds), reason, iso(utcnow()), *args)
    stopping = sql.all(ASK_TO_STOP.format(builds=builds), reason, *args)
    add_rows(sql, [r["id"] for r in cancelled], JobState.CANCELLED, reason)
    _refresh_builds(sql, {r["build_id"] for r in cancelled})
    return [r["id"] for r in cancelled], [r["id"] for r in stopping]


def _drop_cancelled(sql: Sql, job_id: int, now: str | None) -> None:
    row = sql.one(DROP_CANCELLED, now, job_id)
    if row is not None:
        add_rows(sql, [job_id], JobState.CANCELLED, row["reason"])
        _refresh_builds(sql, [row["build_id"]])


def _refresh_builds(sql: Sql, build_ids: Iterable[int]) -> None:
    """Derive each build's state and times from its jobs (SPEC §3)."""
    for build_id in build_ids:
        rows = sql.all("SELECT state, started_at, finished_at FROM jobs WHERE build_id = ?",
                       build_id)
        state = build_state(JobState(r["state"]) for r in rows)
        started = min((r["started_at"] for r in rows if r["started_at"]), default=None)
        finished = (max((r["finished_at"] or "" for r in rows), default=None)
                    if state.finished else None)
        sql.run("UPDATE builds SET state = ?, started_at = ?, finished_at = ? WHERE id = ?",
                str(state), started, finished, build_id)
