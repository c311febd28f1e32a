"""What every build host is, and the parts of running `job.sh` that local and SSH share.

A host runs one attempt of a job through `job.sh`, fed over stdin: the wrapper's text
after a preamble of shell-quoted assignments, so job data never reaches a command line.
The wrapper's stdout is the job's log and its last stderr line says how the job ended.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Protocol

from ..logs import JobLog
from ..model import HostState

CHUNK = 1 << 16  # 64 KiB reads: line iterators cost ~3 µs of Python per line
KILL_GRACE_S = 10  # SPEC §5: SIGTERM, then SIGKILL 10 s later
WRAPPER = files(__package__).joinpath("job.sh").read_text()
# The command line every host runs: fixed text that reads the wrapper from stdin in one go
# (bash reading a script from a pipe would read it a byte at a time).
READ_WRAPPER = 'eval "$(cat)"'
COMMAND = f"bash -c {shlex.quote(READ_WRAPPER)}"
# What `asyncci check` asks of a host: one line, and a non-zero exit if git or bash lacks.
PROBE = (
    'command -v git >/dev/null || { echo "git is missing"; exit 1; }; '
    'printf "%s; bash %s" "$(git --version)" "${BASH_VERSION%%(*}"'
)


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

    @property
    def dirname(self) -> str:
        """The attempt's directory on the host: a stale attempt never shares one."""
        return f"{self.job_id}-{self.attempt}"


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None  # None: the job ended without a status (or never started)
    error: str | None = None  # why it could not start (e.g. checkout failed)


class Host(Protocol):
    name: str
    labels: frozenset[str]
    slots: int
    state: HostState
    last_error: str | None
    latency_ms: float | None

    def watch(self, on_change: Callable[[], None]) -> None:
        """Call `on_change` whenever the host's state changes (the scheduler's wake-up)."""

    async def maintain(self) -> None:
        """Keep the host reachable for as long as the server runs."""

    async def run(self, run: JobRun, log: JobLog, attach: bool) -> Outcome:
        """Start (or reattach to) the attempt and stream its log from `log.raw_offset`;
        raises HostLost if the host goes away meanwhile."""

    async def kill(self, run: JobRun) -> None:
        """SIGTERM the attempt's process group, SIGKILL it after the grace period."""

    def shell_command(self, repo: str, slot: int) -> str | None:
        """A command that opens a shell in a slot's workspace for the repo."""

    async def probe(self) -> str:
        """Versions of what jobs need there (git, bash); raises HostLost if unusable."""


def workspace_path(workdir: str, repo: str, slot: int) -> str:
    """Mirrors job.sh's layout: one workspace per repo and slot, cleaned for each job."""
    return f"{workdir.rstrip('/')}/ws/{repo}/{slot}"


def wrapper_input(mode: str, workdir: str, run: JobRun, offset: int = 0) -> bytes:
    """The wrapper with its preamble: every value shell-quoted, so a branch named
    `$(rm -rf ~)` or `--upload-pack=x` stays data."""
    values = {
        "AC_MODE": mode,
        "AC_WORKDIR": workdir,
        "AC_JOB": run.dirname,
        "AC_REPO": run.repo,
        "AC_URL": run.url,
        "AC_SHA": run.sha,
        "AC_REF": run.ref,
        "AC_SLOT": str(run.slot),
        "AC_OFFSET": str(offset),
        "AC_GRACE": str(KILL_GRACE_S),
        "AC_SCRIPT": run.script if mode == "start" else "",
        "AC_ENV": env_file(run.env) if mode == "start" else "",
    }
    preamble = "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())
    return (preamble + WRAPPER).encode()


def env_file(env: Mapping[str, str]) -> str:
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items())


class Reader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


async def pump(stdout: Reader, stderr: Reader, log: JobLog) -> Outcome:
    """Copy the log stream into `log` in chunks, then read how the job ended."""
    while chunk := await stdout.read(CHUNK):
        log.write(chunk)
    return parse_status(await stderr.read())


def parse_status(stderr: bytes) -> Outcome:
    lines = stderr.decode(errors="replace").strip().splitlines()
    last = lines[-1] if lines else ""
    word, _, rest = last.partition(" ")
    if word == "asyncci-exit" and rest.strip().lstrip("-").isdigit():
        return Outcome(int(rest))
    if word == "asyncci-error":
        return Outcome(None, rest or "the job could not be started")
    if word == "asyncci-lost":
        return Outcome(None)
    raise HostLost("job wrapper ended unexpectedly: " + (" ".join(lines[-3:]) or "no output"))
