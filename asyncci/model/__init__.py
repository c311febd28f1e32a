"""The vocabulary every layer shares: states, events, builds and jobs.

Enum values are SPEC's strings, so the database, the API and the templates speak one
language. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from ..refs import branch_of


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

    @property
    def failed(self) -> bool:
        """Something went wrong: its script failed, or asyncci could not run it. A reader
        comes for these; a cancelled job is not one, nothing went wrong there."""
        return self in (JobState.FAILED, JobState.ERRORED)

    @property
    def unsuccessful(self) -> bool:
        """Ended short of passing (failed, errored or cancelled): what "rebuild failed
        jobs" runs again."""
        return self.finished and self is not JobState.PASSED


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
    image: str = ""  # run in a fresh container of this image
    isolation: str = "untrusted"  # "all": confined even when the build is trusted
    network: bool = True  # false: confined without network

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "script": self.script,
            "labels": list(self.labels),
            "timeout": self.timeout,
            "env": dict(self.env),
            "artifacts": list(self.artifacts),
            "junit": list(self.junit),
            "image": self.image,
            "isolation": self.isolation,
            "network": self.network,
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
            image=str(d.get("image") or ""),
            isolation=str(d.get("isolation") or "untrusted"),
            network=bool(d.get("network", True)),
        )


class Confinement(StrEnum):
    """How a job is kept from the host and from other jobs (SPEC §5a)."""

    SANDBOX = "sandbox"  # bubblewrap on the host
    CONTAINER = "container"  # a fresh container of the job's image

    @classmethod
    def of(cls, spec: JobSpec, untrusted: bool) -> Confinement | None:
        """An image always means a container; an untrusted build, or `isolation = "all"`,
        a sandbox at least; anything else runs as the build user, unconfined."""
        if spec.image:
            return cls.CONTAINER
        if untrusted or spec.isolation == "all":
            return cls.SANDBOX
        return None


class Capability(StrEnum):
    """Labels a host earns (by probing, or by its config) rather than being given: a job
    that needs one waits for a host that has it. Config refuses labels of this prefix."""

    SANDBOX = "asyncci:sandbox"  # bwrap works there
    CONTAINER = "asyncci:container"  # its container engine answers
    UNTRUSTED = "asyncci:untrusted"  # it takes untrusted builds
    APPROVED = "asyncci:approved"  # no host has it: a job needing it waits for a person


class Approval(StrEnum):
    """A fork's pull request under `fork_pull_requests = "approve"` (SPEC §5a)."""

    WAITING = "waiting"
    APPROVED = "approved"


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
    exit_code: int | None = None
    reason: str | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: list[Attempt] = field(default_factory=list)


@dataclass
class BuildHead:
    """What a job needs of its build to be queued, run and reported: which commit, asked
    for how, and how far it is trusted. A build's state is not part of it: a job's
    transition changes that."""

    id: int
    repo: str
    ref: str
    sha: str
    event: Event
    pr: int | None = None
    untrusted: bool = False  # SPEC §5a: decided by the planner, once
    approval: Approval | None = None  # None: needs none

    @property
    def branch(self) -> str | None:
        return branch_of(self.ref)


@dataclass
class Build(BuildHead):
    _: KW_ONLY
    state: JobState
    created_at: datetime
    message: str = ""
    author: str = ""
    fork: bool = False
    error: str | None = None  # why the build could not be planned
    base_ref: str | None = None  # the branch its test results are compared with
    rebuild_of: int | None = None  # the build this one repeats (all of it or some jobs)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    jobs: list[Job] = field(default_factory=list)


def counted(n: int, what: str, plural: str = "s") -> str:
    """`1 artifact`, `2 artifacts`."""
    return f"{n} {what}{plural if n != 1 else ''}"


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


# A scheme (bounded, so a long word costs no backtracking), then userinfo up to the
# last `@` before the end of the host (`/`, `?`, `#`, space).
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31}://)[^/?#\s]*@")


def redact_url(url: str) -> str:
    """`url` with its userinfo (`bot:TOKEN@`) replaced by `***`, so a credential in a
    repo's URL is never shown. Also works on text that quotes URLs, such as git's errors."""
    return _USERINFO.sub(r"\1***@", url)


@dataclass(frozen=True)
class HostStatus:
    """A host as the web shows it, taken from the scheduler at one moment: the web reads
    this, never a host object."""

    name: str
    state: HostState  # DRAINING: online, taking no new jobs
    slots: int
    busy: int
    labels: tuple[str, ...]
    last_error: str | None
    latency_ms: float | None
    confines: str  # how it confines jobs, in words

    @property
    def up(self) -> bool:
        return self.state in (HostState.ONLINE, HostState.DRAINING)


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
    cron_slot: datetime | None = None  # the schedule's time slot a cron build is for


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
    build: BuildHead


@dataclass(frozen=True)
class OutboxItem:
    """A job's state to tell GitHub, as it was at the transition that wrote it."""

    id: int
    job: Job
    github: str  # the repository, owner/name
    sha: str
    state: JobState
    detail: str | None  # the host, the reason, the wait
