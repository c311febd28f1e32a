"""The top of a build page: what each job came to, which tests fail across a matrix, where
the queued jobs wait, and how far a running build is against the last one that passed.

Pure functions over the build's JSON, so the page and the API speak one vocabulary, and
one gatherer that asks the store and the scheduler for the little the JSON lacks. Nothing
here reads a log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from ..model import Build, JobState
from .durations import seconds_between, span
from .keys import SCHEDULER, STORE

Json = Mapping[str, Any]
# Failed jobs first (SPEC: the reader came for them), then what is still to come.
AFTER_FAILED = (JobState.CANCELLED, JobState.RUNNING, JobState.QUEUED, JobState.PASSED)
OPEN = frozenset(s for s in JobState if s.failed or s is JobState.RUNNING)  # shown unfolded
MATRIX_FAILURES = 50  # failing tests listed at the top; the rest are counted


def rank(state: JobState) -> int:
    return 0 if state.failed else 1 + AFTER_FAILED.index(state)


def word(item: Json) -> str:
    """The state a person reads: a job its timeout stopped "timed out", not "failed" (and
    not its exit code); a build whose failures are all timeouts too."""
    if item["state"] != JobState.FAILED:
        return str(item["state"])
    jobs = item.get("jobs")
    failed = [j for j in jobs if j["state"] == JobState.FAILED] if jobs is not None else [item]
    timed_out = all((j.get("reason") or "").startswith("timed out") for j in failed)
    return "timed out" if failed and timed_out else "failed"


def tests_note(tests: Json | None) -> str:
    """`2 new ✘`, `3 failing ✘` or `120 ✔`: a job's tests in a table cell."""
    if not tests or not any(tests["totals"].values()):
        return ""
    if tests["new"]:
        return f"{len(tests['new'])} new ✘"
    if tests["failures"]:
        return f"{len(tests['failures'])} failing ✘"
    return f"{tests['totals']['passed']} ✔"


def job_note(job: Json, place: tuple[str, str] | None) -> str:
    """Why a job is where it is: its place in the queue, what is happening to it (the
    scheduler's live note), or why it ended short of passing."""
    if place is not None:
        position, reason = place
        return f"position {position}" + (f": {reason}" if reason else "")
    if job["state"] == JobState.RUNNING:
        return str(job.get("note") or "")
    reason = job.get("reason") or ""
    return "" if job["state"] == JobState.PASSED else reason


def bar(elapsed: float | None, usual: float | None) -> tuple[float, float] | None:
    """A <progress>'s (value, max): time run against the usual, full once past it."""
    if elapsed is None or not usual:
        return None
    top = round(max(usual, 0.1), 1)
    return min(round(elapsed, 1), top), top


def job_rows(jobs: Sequence[Json], places: Mapping[int, tuple[str, str]],
             usual: Mapping[str, float]) -> list[dict[str, Any]]:
    """One row per job, failed ones first; `usual` is how long each job name took in the
    last passing build, for a running job's bar."""
    rows = [{"job": j, "word": word(j), "tests": tests_note(j.get("tests")),
             "note": job_note(j, places.get(j["id"])),
             "usual": usual.get(j["name"]) if j["state"] == JobState.RUNNING else None,
             "bar": bar(seconds_between(j["started_at"], None), usual.get(j["name"]))
             if j["state"] == JobState.RUNNING else None}
            for j in jobs]
    return sorted(rows, key=lambda r: (rank(JobState(r["job"]["state"])), r["job"]["id"]))


def matrix_failures(jobs: Sequence[Json]) -> list[dict[str, Any]]:
    """Each failing test once, however many jobs of a matrix fail it: `new failure in
    4/4 jobs`, out of the jobs that reported tests. New ones first, then the widest."""
    reported = [j for j in jobs if j.get("tests") and any(j["tests"]["totals"].values())]
    found: dict[str, dict[str, Any]] = {}
    for job in reported:
        new = {t["name"] for t in job["tests"]["new"]}
        for test in job["tests"]["failures"]:
            entry = found.setdefault(test["name"], {"name": test["name"], "jobs": [], "new": 0,
                                                    "message": test["message"]})
            entry["jobs"].append(job["name"])
            entry["new"] += test["name"] in new
    for entry in found.values():
        entry["text"] = _spread(len(entry["jobs"]), entry["new"], len(reported))
    return sorted(found.values(), key=lambda e: (-e["new"], -len(e["jobs"]), e["name"]))


def _spread(failing: int, new: int, reported: int) -> str:
    where = f"in {failing}/{reported} job{'s' if reported != 1 else ''}"
    if new == failing:
        return f"new failure {where}"
    return f"failing {where}" + (f" (new in {new})" if new else "")


def progress(build: Json, last: Build | None) -> dict[str, Any] | None:
    """Laminar's bar: how long a running build has run, against how long the last passing
    build of its ref took; None once it has finished or before it starts."""
    elapsed = seconds_between(build["started_at"], None)
    if build["finished_at"] is not None or elapsed is None:
        return None
    usual = seconds_between(last.started_at, last.finished_at) if last else None
    result: dict[str, Any] = {"text": f"running for {span(elapsed)}", "bar": bar(elapsed, usual),
                              "last": last and last.id}
    if usual:
        result["eta"] = (f"about {span(usual - elapsed)} left" if elapsed < usual
                         else f"{span(elapsed - usual)} longer than usual")
        result["usual"] = span(usual)
    return result


def _job_times(build: Build | None) -> dict[str, float]:
    if build is None:
        return {}
    return {j.name: s for j in build.jobs
            if (s := seconds_between(j.started_at, j.finished_at)) is not None}


async def build_summary(request: web.Request, loaded: Build, build: Json) -> dict[str, Any]:
    """What the build page shows above the logs, beside the build's JSON."""
    store = request.app[STORE]
    jobs = build["jobs"]
    places = request.app[SCHEDULER].places([j["id"] for j in jobs
                                            if j["state"] == JobState.QUEUED])
    running = build["finished_at"] is None
    last = await store.last_passed(loaded.repo, loaded.ref, loaded.id) if running else None
    failing = matrix_failures(jobs)
    return {
        "summary": job_rows(jobs, places, _job_times(last)),
        "failing": failing[:MATRIX_FAILURES],
        "failing_count": len(failing),
        "progress": progress(build, last),
        "rebuilt_as": await store.rebuilds_of(loaded.id),
        "failed_jobs": sum(JobState(j["state"]).unsuccessful for j in jobs),
        "open_states": OPEN,
    }
