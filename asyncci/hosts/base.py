"""What every build host is: the `Host` protocol and the values that cross it.

A host runs one attempt of a job through `job.sh` (see `wrapper.py`) and, once it ended,
hands back what it left (see `collection.py`); the scheduler knows hosts only through
this protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from ..logs.joblog import JobLog
from ..model import Confinement, HostState
from ..model.results import Artifact, TestResult


class HostLost(Exception):
    """The host went away while a job ran on it: an infrastructure error, not a failure."""


@dataclass(frozen=True)
class JobRun:
    """One attempt of one job on one slot: everything the wrapper needs."""

    job_id: int
    attempt: int
    repo: str
    url: str
    sha: str
    ref: str
    slot: int
    script: str
    env: Mapping[str, str] = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()  # glob patterns, relative to the workspace
    junit: tuple[str, ...] = ()
    artifact_cap: int = 0  # bytes per job over artifacts and junit files; 0: collect nothing
    untrusted: bool = False  # a workspace of its own, removed once the job ended
    confinement: Confinement | None = None
    image: str = ""
    network: bool = True

    @property
    def dirname(self) -> str:
        """The attempt's directory on the host: a stale attempt never shares one."""
        return f"{self.job_id}-{self.attempt}"


NO_RUN = JobRun(0, 0, "", "", "", "", 0, "")  # what a probe is about: no job


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None  # None: the job ended without a status (or never started)
    error: str | None = None  # why it could not start (e.g. checkout failed)

    @property
    def told(self) -> bool:
        """The host told how the attempt ended: it waits for FORGET to drop its log."""
        return self.exit_code is not None or self.error is not None


@dataclass(frozen=True)
class Collected:
    """What a finished attempt left behind: its artifacts (copied to the server), its test
    results, and a line for each thing that could not be had."""

    artifacts: list[Artifact]
    tests: list[TestResult]
    errors: list[str]


class Host(Protocol):
    name: str
    labels: frozenset[str]
    capabilities: frozenset[str]  # Capability labels the host has shown it has
    abilities: str  # how it confines, in words: `sandbox: bubblewrap 0.8.0; containers: no`
    slots: int
    state: HostState
    last_error: str | None
    latency_ms: float | None
    offline_since: datetime | None  # when it stopped answering; None while it answers

    def watch(self, on_change: Callable[[], None]) -> None:
        """Call `on_change` whenever the host's state changes (the scheduler's wake-up)."""

    async def maintain(self) -> None:
        """Keep the host reachable for as long as the server runs."""

    async def run(self, run: JobRun, log: JobLog, attach: bool) -> Outcome:
        """Start (or reattach to) the attempt and stream its log from `log.raw_offset`;
        raises HostLost if the host goes away meanwhile."""

    async def kill(self, run: JobRun, reap: bool = False) -> None:
        """SIGTERM the attempt's process group, SIGKILL it after the kill grace the host
        was made with; with `reap`, return only once it is gone. Raises HostLost if that
        cannot be done."""

    def shell_command(self, repo: str, slot: int) -> str | None:
        """A command that opens a shell in a slot's workspace for the repo."""

    async def probe(self) -> str:
        """Versions of what jobs need there (git, bash) and of what confines them there;
        raises HostLost if unusable."""

    async def collect(self, run: JobRun, dest: Path) -> Collected:
        """Copy the finished attempt's artifacts to `dest`, replacing whatever is there, and
        parse its JUnit reports; raises HostLost if the host cannot be reached."""
