"""The JSON of SPEC §7: builds, jobs, tests, artifacts, the queue, hosts and repos as the
API answers them and the pages show them, so both speak one vocabulary.

Pure: data in, dicts out. What only the scheduler knows of a job comes through `Live`;
nothing here reads a request, the store or a log.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote

from ..config import RepoConfig
from ..model import Build, BuildHead, Confinement, HostStatus, Job, JobState, iso, redact_url
from ..model.results import Artifact, TestOutcome, TestReport, TestResult


class Live(Protocol):
    """What the scheduler alone knows of a job (the Scheduler is one)."""

    def shell_command(self, build: BuildHead, job: Job) -> str | None: ...

    def note(self, job_id: int) -> str | None: ...


def shown(text: str | None) -> str | None:
    """A message that may quote git's, with any credential in a URL hidden."""
    return text and redact_url(text)


def job_json(build: BuildHead, job: Job, live: Live) -> dict[str, Any]:
    shell = live.shell_command(build, job) if job.state.failed else None
    confinement = Confinement.of(job.spec, build.untrusted)
    return {
        "id": job.id, "build_id": job.build_id, "name": job.name, "state": job.state,
        "host": job.host, "slot": job.slot, "attempt": job.attempt,
        "exit_code": job.exit_code, "reason": shown(job.reason),
        "queued_at": iso(job.queued_at), "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at), "labels": list(job.spec.labels),
        "shell": shell, "confined": confinement, "image": job.spec.image or None,
        "note": live.note(job.id) if job.state is JobState.RUNNING else None,
        "network": job.spec.network if confinement else True,
        "attempts": [
            {"number": a.number, "host": a.host, "slot": a.slot, "started_at": iso(a.started_at),
             "finished_at": iso(a.finished_at), "outcome": a.outcome, "reason": shown(a.reason)}
            for a in job.attempts
        ],
    }


def head_json(build: BuildHead) -> dict[str, Any]:
    """What a job's row says of its build."""
    return {"id": build.id, "repo": build.repo, "ref": build.ref, "branch": build.branch,
            "sha": build.sha, "event": build.event, "pr": build.pr}


def build_json(build: Build, live: Live, public_url: str) -> dict[str, Any]:
    return {
        **head_json(build), "message": build.message,
        "author": build.author, "state": build.state, "error": shown(build.error),
        "untrusted": build.untrusted, "fork": build.fork, "approval": build.approval,
        "created_at": iso(build.created_at), "started_at": iso(build.started_at),
        "finished_at": iso(build.finished_at),
        "url": f"{public_url.rstrip('/')}/builds/{build.id}",
        "rebuild_of": build.rebuild_of,
        "jobs": [job_json(build, job, live) for job in build.jobs],
    }


def queued_json(build: BuildHead, job: Job, live: Live, position: int, reason: str,
                now: datetime) -> dict[str, Any]:
    """A queued job with where it stands in the pick order, why, and its wait so far."""
    queued_at = job.queued_at or now
    return {
        **job_json(build, job, live),
        "repo": build.repo, "ref": build.ref, "sha": build.sha, "event": build.event,
        "position": position, "reason": reason,
        "waited_s": round((now - queued_at).total_seconds(), 3),
    }


def tests_json(report: TestReport) -> dict[str, Any]:
    """SPEC §7; every test is an object {name, outcome, message}, so a new or still
    failing test comes with its message."""
    failing = {t.name: t for t in report.failures}
    return {
        "totals": report.totals,
        "failures": [_test_json(t) for t in report.failures],
        "new": [_test_json(failing[n]) for n in report.new],
        "fixed": [_test_json(TestResult(n, TestOutcome.PASSED)) for n in report.fixed],
        "still_failing": [_test_json(failing[n]) for n in report.still_failing],
        "base_ref": report.base_ref,
        "base_build": report.base_build,
        "summary": report.summary(),
    }


def _test_json(test: TestResult) -> dict[str, str]:
    return {"name": test.name, "outcome": test.outcome, "message": test.message}


def artifacts_json(job_id: int, artifacts: Sequence[Artifact]) -> list[dict[str, Any]]:
    return [{"path": a.path, "size": a.size, "url": f"/api/jobs/{job_id}/artifacts/{quote(a.path)}"}
            for a in artifacts]


def host_json(host: HostStatus) -> dict[str, Any]:
    return {
        "name": host.name, "state": host.state, "slots": host.slots, "busy": host.busy,
        "labels": list(host.labels), "last_error": host.last_error,
        "latency_ms": host.latency_ms, "confines": host.confines,
    }


def repo_json(repo: RepoConfig, status: Any) -> dict[str, Any]:
    """`status`: the store's poll status of the repo (poll_error, polled_at)."""
    return {
        "name": repo.name, "branches": list(repo.branches), "github": repo.github,
        "poll": repo.poll, "poll_error": shown(status.poll_error),
        "polled_at": iso(status.polled_at),
    }
