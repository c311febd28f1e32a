"""The vocabulary every layer shares: states, events, builds and jobs.

Enum values are SPEC's strings, so the database, the API and the templates speak one
language. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    ERRORED = "errored"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING)


class Event(StrEnum):
    PUSH = "push"
    PULL_REQUEST = "pull_request"
    MANUAL = "manual"
    CRON = "cron"
    POLL = "poll"

    @property
    def priority(self) -> int:
        """SPEC §4: manual first, then push/poll/cron, then pull requests."""
        if self is Event.MANUAL:
            return 0
        if self is Event.PULL_REQUEST:
            return 2
        return 1


class HostState(StrEnum):
    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"
    DRAINING = "draining"


@dataclass(frozen=True)
class JobSpec:
    """One job as planned; stored with the build so a rebuild runs exactly the same."""

    name: str
    script: str
    labels: tuple[str, ...] = ()
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()
    junit: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "script": self.script,
            "labels": list(self.labels),
            "timeout": self.timeout,
            "env": dict(self.env),
            "artifacts": list(self.artifacts),
            "junit": list(self.junit),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        return cls(
            name=str(d["name"]),
            script=str(d["script"]),
            labels=tuple(d.get("labels") or ()),
            timeout=d.get("timeout"),
            env=dict(d.get("env") or {}),
            artifacts=tuple(d.get("artifacts") or ()),
            junit=tuple(d.get("junit") or ()),
        )


@dataclass
class Attempt:
    number: int
    host: str
    slot: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    reason: str | None


@dataclass
class Job:
    id: int
    build_id: int
    name: str
    state: JobState
    spec: JobSpec
    host: str | None = None
    slot: int | None = None
    attempt: int = 0
    cancel_requested: bool = False
    exit_code: int | None = None
    reason: str | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: list[Attempt] = field(default_factory=list)


@dataclass
class Build:
    id: int
    repo: str
    ref: str
    sha: str
    event: Event
    state: JobState
    created_at: datetime
    pr: int | None = None
    message: str = ""
    author: str = ""
    fork: bool = False
    error: str | None = None  # why the build could not be planned
    started_at: datetime | None = None
    finished_at: datetime | None = None
    jobs: list[Job] = field(default_factory=list)

    @property
    def branch(self) -> str | None:
        return branch_of(self.ref)


def branch_of(ref: str) -> str | None:
    prefix = "refs/heads/"
    return ref[len(prefix):] if ref.startswith(prefix) else None


def build_state(states: Iterable[JobState]) -> JobState:
    """SPEC §3: any running → running; all passed → passed; any failed → failed; else
    errored, else cancelled. A build still waiting for all its jobs is queued."""
    seen = set(states)
    if not seen:
        return JobState.ERRORED
    if JobState.RUNNING in seen:
        return JobState.RUNNING
    if JobState.QUEUED in seen:
        # Some jobs done, others waiting: the build is under way.
        return JobState.RUNNING if seen - {JobState.QUEUED} else JobState.QUEUED
    if seen == {JobState.PASSED}:
        return JobState.PASSED
    for state in (JobState.FAILED, JobState.ERRORED):
        if state in seen:
            return state
    return JobState.CANCELLED


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(at: datetime | None) -> str | None:
    """SPEC §7: ISO 8601, UTC, explicit `Z` offset; fixed width, so strings sort as times."""
    if at is None:
        return None
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
