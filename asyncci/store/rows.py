"""Rows → the model's types, and loading builds whole (their jobs, and the jobs' attempts),
which reads and transitions both answer with. Runs on the database thread."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from datetime import datetime

from ..model import (ActiveJob, Approval, Attempt, Build, BuildHead, Event, Job, JobSpec,
                     JobState)
from .connection import Sql

# Jobs with the head of their build, read by `active_from`.
ACTIVE = ("SELECT j.*, b.repo AS b_repo, b.ref AS b_ref, b.sha AS b_sha, b.event AS b_event,"
          " b.pr AS b_pr, b.untrusted AS b_untrusted, b.approval AS b_approval"
          " FROM jobs j JOIN builds b ON b.id = j.build_id")


def timestamp(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def build_from(r: sqlite3.Row) -> Build:
    return Build(
        id=r["id"], repo=r["repo"], ref=r["ref"], sha=r["sha"], event=Event(r["event"]),
        state=JobState(r["state"]), created_at=datetime.fromisoformat(r["created_at"]),
        pr=r["pr"], message=r["message"], author=r["author"], fork=bool(r["fork"]),
        untrusted=bool(r["untrusted"]), approval=_approval(r["approval"]), error=r["error"],
        base_ref=r["base_ref"], rebuild_of=r["rebuild_of"],
        started_at=timestamp(r["started_at"]), finished_at=timestamp(r["finished_at"]),
    )


def active_from(r: sqlite3.Row) -> ActiveJob:
    head = BuildHead(
        id=r["build_id"], repo=r["b_repo"], ref=r["b_ref"], sha=r["b_sha"],
        event=Event(r["b_event"]), pr=r["b_pr"], untrusted=bool(r["b_untrusted"]),
        approval=_approval(r["b_approval"]),
    )
    return ActiveJob(job_from(r), head)


def _approval(value: str | None) -> Approval | None:
    return None if value is None else Approval(value)


def job_from(r: sqlite3.Row) -> Job:
    return Job(
        id=r["id"], build_id=r["build_id"], name=r["name"], state=JobState(r["state"]),
        spec=JobSpec.from_dict(json.loads(r["spec"])), host=r["host"], slot=r["slot"],
        attempt=r["attempt"], exit_code=r["exit_code"], reason=r["reason"],
        queued_at=timestamp(r["queued_at"]), started_at=timestamp(r["started_at"]),
        finished_at=timestamp(r["finished_at"]),
    )


def attempt_from(a: sqlite3.Row) -> Attempt:
    return Attempt(
        number=a["number"], host=a["host"], slot=a["slot"],
        started_at=datetime.fromisoformat(a["started_at"]),
        finished_at=timestamp(a["finished_at"]), outcome=a["outcome"], reason=a["reason"],
    )


def load_build(sql: Sql, build_id: int) -> Build | None:
    row = sql.one("SELECT * FROM builds WHERE id = ?", build_id)
    return None if row is None else load_builds(sql, [row])[0]


def of_repo(repo: str, ref: str | None) -> tuple[str, tuple[str, ...]]:
    """The WHERE clause and its arguments for a repo's builds, or one ref's."""
    return ("repo = ? AND ref = ?", (repo, ref)) if ref else ("repo = ?", (repo,))


def load_builds(sql: Sql, rows: Sequence[sqlite3.Row],
                jobs_of: Collection[JobState] | None = None) -> list[Build]:
    """Build rows with their jobs and the jobs' attempts, in the rows' order; with
    `jobs_of`, only the builds in those states get theirs (a list of builds of big
    matrices need not read 100 jobs a row)."""
    everything = {r["id"]: build_from(r) for r in rows}
    builds = {i: b for i, b in everything.items() if jobs_of is None or b.state in jobs_of}
    if builds:
        marks = ",".join("?" * len(builds))
        for j in sql.all(f"SELECT * FROM jobs WHERE build_id IN ({marks}) ORDER BY id", *builds):
            builds[j["build_id"]].jobs.append(job_from(j))
        by_job = {job.id: job for b in builds.values() for job in b.jobs}
        for a in sql.all(f"SELECT a.* FROM attempts a JOIN jobs j ON j.id = a.job_id"
                         f" WHERE j.build_id IN ({marks}) ORDER BY a.job_id, a.number", *builds):
            by_job[a["job_id"]].attempts.append(attempt_from(a))
    return list(everything.values())
