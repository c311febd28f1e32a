"""Builds and jobs as the pages, the API, badges, metrics and a restart read them. Each read
is one callable on the database thread, however many statements it takes."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..model import ActiveJob, Build, Job, JobSpec, JobState
from .connection import Part, Sql
from .rows import (ACTIVE, active_from, attempt_from, job_from, load_build, load_builds, of_repo,
                   timestamp)


@dataclass(frozen=True)
class BuildTime:
    """A finished build's state and times: one bar of a repo's history strip."""

    id: int
    state: JobState
    started_at: datetime | None
    finished_at: datetime | None


class Reads(Part):
    async def get_build(self, build_id: int) -> Build | None:
        return await self._db.read(lambda sql: load_build(sql, build_id))

    async def get_job(self, job_id: int) -> Job | None:
        def job(sql: Sql) -> Job | None:
            row = sql.one("SELECT * FROM jobs WHERE id = ?", job_id)
            if row is None:
                return None
            found = job_from(row)
            found.attempts = [attempt_from(a) for a in sql.all(
                "SELECT * FROM attempts WHERE job_id = ? ORDER BY number", job_id)]
            return found

        return await self._db.read(job)

    async def build_pipeline(self, build_id: int) -> list[JobSpec] | None:
        row = await self._db.read(
            lambda sql: sql.one("SELECT pipeline FROM builds WHERE id = ?", build_id))
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
        jobs_of: Collection[JobState] | None = None,
    ) -> list[Build]:
        """Builds newest first, with ids between `after` and `before` (both excluded); with
        `jobs_of`, only those in these states have their jobs."""
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
        return await self._db.read(lambda sql: load_builds(sql, sql.all(
            f"SELECT * FROM builds WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
            *args, limit), jobs_of))

    async def latest_per_ref(self, repo: str, limit: int = 50) -> list[Build]:
        """The newest build of each of a repo's refs, most recently built refs first."""
        return await self._db.read(lambda sql: load_builds(sql, sql.all(
            "SELECT b.* FROM refs r JOIN builds b ON b.id = r.build_id"
            " WHERE r.repo = ? ORDER BY r.build_id DESC LIMIT ?", repo, limit)))

    async def last_passed(self, repo: str, ref: str, before: int) -> Build | None:
        """The newest passing build of a ref older than build `before`: what a running
        build's ETA is measured against (a partial index holds passing builds only)."""
        found = await self._db.read(lambda sql: load_builds(sql, sql.all(
            "SELECT * FROM builds WHERE repo = ? AND ref = ? AND state = 'passed'"
            " AND id < ? ORDER BY id DESC LIMIT 1", repo, ref, before)))
        return found[0] if found else None

    async def build_times(self, repo: str, ref: str | None, limit: int = 40) -> list[BuildTime]:
        """The state and times of a repo's (or one ref's) last `limit` finished builds,
        newest first, without their jobs: a history strip."""
        where, args = of_repo(repo, ref)
        rows = await self._db.read(lambda sql: sql.all(
            f"SELECT id, state, started_at, finished_at FROM builds WHERE {where}"
            " AND finished_at IS NOT NULL ORDER BY id DESC LIMIT ?", *args, limit))
        return [BuildTime(r[0], JobState(r[1]), timestamp(r[2]), timestamp(r[3])) for r in rows]

    async def rebuilds_of(self, build_id: int) -> list[int]:
        """The builds that repeat `build_id`, oldest first."""
        rows = await self._db.read(lambda sql: sql.all(
            "SELECT id FROM builds WHERE rebuild_of = ? ORDER BY id LIMIT 20", build_id))
        return [r[0] for r in rows]

    async def newest_build_id(self) -> int:
        """The highest build id so far, 0 before the first build."""
        row = await self._db.read(lambda sql: sql.one("SELECT MAX(id) FROM builds"))
        return int(row[0] or 0) if row else 0

    async def latest_finished_state(self, repo: str, ref: str | None) -> JobState | None:
        """The state of the newest finished build of a repo (or of one ref): badges."""
        newest = await self.build_times(repo, ref, 1)
        return newest[0].state if newest else None

    async def last_cron_slot(self, repo: str) -> datetime | None:
        """The time slot of the repo's latest scheduled build."""
        row = await self._db.read(lambda sql: sql.one(
            "SELECT cron_slot FROM builds WHERE repo = ? AND cron_slot IS NOT NULL"
            " ORDER BY id DESC LIMIT 1", repo))
        return None if row is None else timestamp(row[0])

    async def job_states(self, job_ids: Collection[int]) -> dict[int, JobState]:
        """The state of each of these jobs that exists: a live log's feed, every poll."""
        ids = list(job_ids)
        rows = await self._db.read(lambda sql: sql.all(
            f"SELECT id, state FROM jobs WHERE id IN ({','.join('?' * len(ids))})", *ids))
        return {r[0]: JobState(r[1]) for r in rows}

    async def active_jobs(self, job_ids: Sequence[int] | None = None) -> list[ActiveJob]:
        """Queued and running jobs (all, or those of `job_ids`), oldest first: what a
        restart rebuilds its queue from, and what a page of the queue shows."""
        where, args = "j.state IN ('queued', 'running')", list(job_ids or ())
        if job_ids is not None:
            where += f" AND j.id IN ({','.join('?' * len(args))})"
        rows = await self._db.read(
            lambda sql: sql.all(f"{ACTIVE} WHERE {where} ORDER BY j.id", *args))
        return [active_from(r) for r in rows]

    async def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Builds and jobs by state."""

        def count(sql: Sql, table: str) -> dict[str, int]:
            return {r[0]: r[1] for r in sql.all(
                f"SELECT state, COUNT(*) FROM {table} GROUP BY state")}

        return await self._db.read(lambda sql: (count(sql, "builds"), count(sql, "jobs")))

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

        def histogram(sql: Sql, name: str) -> tuple[list[int], float, int]:
            expr = seconds[name]
            columns = ", ".join(f"SUM({expr} <= {b!r})" for b in buckets)
            row = sql.one(f"SELECT {columns}, SUM({expr}), COUNT(*) FROM jobs WHERE {where[name]}")
            assert row is not None
            values = [v or 0 for v in row]
            return values[:-2], float(values[-2]), int(values[-1])

        return await self._db.read(lambda sql: {name: histogram(sql, name) for name in seconds})
