"""A repo's tests at a glance (`/repos/{repo}/tests`): failing now on the default branch,
new since the run before, flaky, slowest.

It reads a window of recent runs, never the history: the failing rows of the default
branch's last FLIP_RUNS * 2 builds and of the repo's last RECENT_BUILDS builds, through an
index that holds failing rows only. A test a run's report lacks counts as not failing
there: reading every passing row of every run would cost a table scan.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from ..model.results import TestResult
from ..store import Store
from ..store.reports import ResultJob

FLIP_RUNS = 20  # a test whose outcome flipped twice within this many runs is flaky
LISTED = 100  # rows per list


Failing = Mapping[int, Sequence[TestResult]]  # job id → its failing tests


def _names(failing: Failing, job: ResultJob) -> set[str]:
    return {t.name for t in failing.get(job.job_id, ())}


def _runs_by_job(jobs: Sequence[ResultJob]) -> dict[str, list[ResultJob]]:
    """Each job name's runs, newest first (as `jobs` comes)."""
    runs: dict[str, list[ResultJob]] = defaultdict(list)
    for job in jobs:
        runs[job.name].append(job)
    return runs


def failing_now(latest: Sequence[ResultJob], history: Sequence[ResultJob],
                failing: Failing) -> list[dict[str, Any]]:
    """The latest build's failing tests, each once, with the jobs failing it and the
    build its unbroken run of failures began in (within the window)."""
    runs = _runs_by_job(history)
    found: dict[str, dict[str, Any]] = {}
    for job in latest:
        for test in failing.get(job.job_id, ()):
            entry = found.setdefault(test.name, {"name": test.name, "jobs": [], "job": job.name,
                                                 "message": test.message, "since": job.build_id})
            entry["jobs"].append(job.name)
            for run in runs[job.name]:
                if test.name not in _names(failing, run):
                    break
                entry["since"] = min(entry["since"], run.build_id)
    return sorted(found.values(), key=lambda e: (-len(e["jobs"]), e["name"]))[:LISTED]


def new_failures(latest: Sequence[ResultJob], history: Sequence[ResultJob],
                 failing: Failing) -> list[dict[str, Any]]:
    """Failing in the latest run of a job, not in the run of that job before it."""
    runs = _runs_by_job(history)
    found = []
    for job in latest:
        before = [r for r in runs[job.name] if r.build_id < job.build_id][:1]
        if before:
            was = _names(failing, before[0])
            found += [{"name": t.name, "job": job.name, "base": before[0].build_id}
                      for t in failing.get(job.job_id, ()) if t.name not in was]
    return sorted(found, key=lambda e: (e["job"], e["name"]))[:LISTED]


def flaky(history: Sequence[ResultJob], recent: Sequence[ResultJob],
          failing: Failing) -> list[dict[str, Any]]:
    """Tests that failed and passed on one commit (within one job name), or whose outcome
    flipped at least twice in a job's last FLIP_RUNS runs of the default branch."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    by_commit: dict[tuple[str, str], list[ResultJob]] = defaultdict(list)
    for job in recent:
        by_commit[(job.sha, job.name)].append(job)
    for (sha, name), jobs in by_commit.items():
        outcomes = [_names(failing, j) for j in jobs]
        for test in set[str]().union(*outcomes) - set[str].intersection(*outcomes):
            found[(name, test)] = {"name": test, "job": name,
                                   "why": f"failed and passed on {sha[:10]}"}
    for name, runs in _runs_by_job(history).items():
        outcomes = [_names(failing, r) for r in runs[:FLIP_RUNS]]
        for test in set[str]().union(*outcomes):
            flips = sum((test in a) != (test in b) for a, b in zip(outcomes, outcomes[1:]))
            if flips >= 2 and (name, test) not in found:
                found[(name, test)] = {"name": test, "job": name,
                                       "why": f"{flips} flips in the last {len(outcomes)} runs"}
    return sorted(found.values(), key=lambda e: (e["job"], e["name"]))[:LISTED]


async def tests_overview(store: Store, repo: str, default_ref: str | None) -> dict[str, Any]:
    """Everything `/repos/{repo}/tests` lists, from a bounded window of runs."""
    history = await store.result_jobs(repo, default_ref, FLIP_RUNS * 2) if default_ref else []
    recent = await store.result_jobs(repo)
    failing = await store.failing_tests({j.job_id for j in (*history, *recent)})
    latest = [j for j in history if j.build_id == history[0].build_id] if history else []
    names = {j.job_id: j.name for j in latest}
    return {
        "build": latest[0].build_id if latest else None,
        "failing": failing_now(latest, history, failing),
        "new": new_failures(latest, history, failing),
        "flaky": flaky(history, recent, failing),
        "slowest": [{"name": t.name, "job": names[job_id], "duration": t.duration}
                    for job_id, t in await store.slowest_tests(names)],
    }
