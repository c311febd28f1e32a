"""What every build host is, and the parts of running `job.sh` that local and SSH share.

A host runs one attempt of a job through `job.sh`, fed over stdin: the wrapper's text
after a preamble of shell-quoted assignments, so job data never reaches a command line.
The wrapper's stdout is the job's log and its last stderr line says how the job ended.
Before it ends, the wrapper puts the files the job's `artifacts` and `junit` patterns name
into the attempt's directory; `collect_files` fetches them from there the same way for
every kind of host, each of which only says how to list, copy and read its files.
"""

from __future__ import annotations

import asyncio
import shlex
import shutil
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import NamedTuple, Protocol

from ..config import HostConfig
from ..logs.joblog import JobLog
from ..model import Artifact, Capability, Confinement, HostState, TestResult
from .results import parse_junit

CHUNK = 1 << 16  # 64 KiB reads: line iterators cost ~3 µs of Python per line
QUIET_S = 0.5
KILL_GRACE_S = 10  # SPEC §5: SIGTERM, then SIGKILL 10 s later
WRAPPER = files(__package__).joinpath("job.sh").read_text()
# The command line every host runs: fixed text that reads the wrapper's bytes (their count
# is its one argument) from stdin in one go (bash reading a script from a pipe would read
# it a byte at a time); the rest of stdin stays for the server's `forget` (see job.sh).
READ_WRAPPER = 'eval "$(head -c "$0")"'
FORGET = b"forget\n"
JUNIT_MAX_BYTES = 50 * 10**6  # a report bigger than this is not read
MAX_TESTS = 100_000  # test cases kept per job: each is a row, and is read for every report


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
        """SIGTERM the attempt's process group, SIGKILL it after the grace period; with
        `reap`, return only once it is gone. Raises HostLost if that cannot be done."""

    def shell_command(self, repo: str, slot: int) -> str | None:
        """A command that opens a shell in a slot's workspace for the repo."""

    async def probe(self) -> str:
        """Versions of what jobs need there (git, bash) and of what confines them there;
        raises HostLost if unusable."""

    async def collect(self, run: JobRun, dest: Path) -> Collected:
        """Copy the finished attempt's artifacts to `dest`, replacing whatever is there, and
        parse its JUnit reports; raises HostLost if the host cannot be reached."""


def workspace_path(workdir: str, repo: str, slot: int) -> str:
    """One workspace per repo and slot for trusted jobs, cleaned for each job."""
    return f"{workdir.rstrip('/')}/{_slot_workspace(repo, slot)}"


def _slot_workspace(repo: str, slot: int) -> str:
    return f"ws/{repo}/{slot}"


def run_workspace(run: JobRun) -> str:
    """Where an attempt runs, relative to the workdir: an untrusted job's workspace is
    its attempt's own, which no other job ever used."""
    return f"ws/untrusted/{run.dirname}" if run.untrusted else _slot_workspace(run.repo, run.slot)


def job_path(workdir: str, run: JobRun) -> str:
    """Mirrors job.sh's layout: the attempt's log, status and collected files."""
    return f"{workdir.rstrip('/')}/jobs/{run.dirname}"


NO_RUN = JobRun(0, 0, "", "", "", "", 0, "")  # what a probe is about: no job


def wrapper_input(mode: str, host: HostConfig, workdir: str, run: JobRun = NO_RUN,
                  offset: int = 0) -> bytes:
    """The wrapper with its preamble: every value shell-quoted, so a branch named
    `$(rm -rf ~)` or `--upload-pack=x` stays data."""
    start = mode == "start"
    collect = start and run.artifact_cap > 0
    slot = str(run.slot)
    values = {
        "AC_MODE": mode,
        "AC_WORKDIR": workdir,
        "AC_WS": run_workspace(run),
        "AC_MIRROR": f"mirrors/{run.repo}.git",
        "AC_FRESH": "1" if run.untrusted else "",
        "AC_CONFINE": str(run.confinement or "") if start else "",
        "AC_IMAGE": run.image,
        "AC_NETWORK": "1" if run.network else "",
        "AC_ENGINE": "\n".join(host.container_command),
        "AC_ENGINE_OPTIONS": "\n".join(host.container_options),
        "AC_DEVICES": "\n".join(d.replace("{slot}", slot) for d in host.slot_devices),
        "AC_HIDE": "\n".join(host.hidden),
        "AC_ENV_NAMES": "\n".join(run.env) if start else "",
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
        "AC_ARTIFACTS": "\n".join(run.artifacts) if collect else "",
        "AC_JUNIT": "\n".join(run.junit) if collect else "",
        "AC_CAP": str(run.artifact_cap),
    }
    preamble = "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())
    return (preamble + WRAPPER).encode()


def command(wrapper: bytes) -> str:
    """The command line that runs `wrapper` sent over stdin: no job data in it."""
    return f"bash -c {shlex.quote(READ_WRAPPER)} {len(wrapper)}"


def capabilities(config: HostConfig, probed: str | None) -> tuple[frozenset[str], str]:
    """What a host's probe (None: not yet) says it can do, as the labels confined jobs
    need, and in words for `asyncci check` and the hosts page."""
    found = dict(line.split(" ", 1) for line in (probed or "").splitlines()[1:] if " " in line)
    labels = {Capability.SANDBOX: "sandbox" in found, Capability.CONTAINER: "container" in found,
              Capability.UNTRUSTED: config.untrusted}
    words = "not probed yet" if probed is None else (
        f"sandbox: {found.get('sandbox') or 'no (needs bwrap)'}; containers:"
        f" {found.get('container') or f'no (needs {config.engine})'}")
    if not config.untrusted:
        words += "; untrusted builds: never"
    return frozenset(str(label) for label, ok in labels.items() if ok), words


def env_file(env: Mapping[str, str]) -> str:
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items())


class Reader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


async def pump(stdout: Reader, stderr: Reader, log: JobLog) -> Outcome:
    """Copy the log stream into `log` in chunks, then read how the job ended. Once it
    ended, the whole log is in `log` (the masker holds nothing back any more): the host
    may be told to forget its copy. A stream quiet for QUIET_S while the masker holds an
    end back (it may begin a secret) gets it written: a live log never waits for more."""
    read = asyncio.ensure_future(stdout.read(CHUNK))
    try:
        while True:
            done, _ = await asyncio.wait({read}, timeout=QUIET_S if log.holding else None)
            if not done:
                log.settle()
                continue
            if not (chunk := read.result()):
                break
            log.write(chunk)
            read = asyncio.ensure_future(stdout.read(CHUNK))
    finally:
        read.cancel()
    outcome = parse_status(await stderr.read())
    if outcome.told:
        log.settle()
    return outcome


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


class Entry(NamedTuple):
    name: bytes
    mode: int  # as lstat sees it: a symlink is a symlink, never what it points to
    size: int


class JobFiles(Protocol):
    """An attempt's directory on its host, as one kind of host reaches it. Paths are
    relative to that directory, "/"-separated; a problem with one file raises OSError,
    anything else means the host is gone."""

    async def listdir(self, path: str) -> list[Entry]:
        """The directory's entries, symlinks not followed; [] if it does not exist."""

    async def copy(self, path: str, target: Path, limit: int) -> int:
        """Copy at most `limit` bytes; the number copied."""

    async def read(self, path: str, limit: int) -> bytes: ...


async def collect_files(files: JobFiles, dest: Path, cap: int) -> Collected:
    """Copy `artifacts/` to `dest` and parse the reports in `junit/`, reports first (as
    job.sh does) so a big artifact never crowds them out. job.sh chose the files within
    the cap; names, symlinks and the cap are checked again against anything else that
    wrote there (a process that outlived its job)."""
    if dest.exists():  # a collect cut short by a restart left part of a copy
        shutil.rmtree(dest)
    errors: list[str] = []
    left = cap
    tests: list[TestResult] = []
    for name, size in await _walk(files, "junit", errors):
        if size > JUNIT_MAX_BYTES:
            errors.append(f"{name}: not read: bigger than {_cap(JUNIT_MAX_BYTES)}")
            continue
        if size > left:
            errors.append(f"{name}: not read: over the {_cap(cap)} cap per job")
            continue
        left -= size
        try:
            tests += await parse_junit(await files.read(f"junit/{name}", size),
                                       MAX_TESTS + 1 - len(tests))
        except OSError as e:
            errors.append(f"{name}: not read: {e.strerror or e}")
        except ValueError as e:
            errors.append(f"{name}: {e}")
    if len(tests) > MAX_TESTS:
        errors.append(f"more than {MAX_TESTS} test cases: only the first {MAX_TESTS} are kept")
        del tests[MAX_TESTS:]
    artifacts = []
    for name, size in await _walk(files, "artifacts", errors):
        if size > left:
            errors.append(f"{name}: skipped: over the {_cap(cap)} cap per job")
            continue
        target = dest / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # One byte past what is left tells a file that grew since it was listed.
            copied = await files.copy(f"artifacts/{name}", target, left + 1)
        except OSError as e:
            errors.append(f"{name}: not copied: {e.strerror or e}")
            continue
        if copied > left:
            target.unlink()
            errors.append(f"{name}: not kept: it grew past the {_cap(cap)} cap per job"
                          " while it was copied")
            continue
        left -= copied
        artifacts.append(Artifact(name, copied))
    return Collected(artifacts, tests, errors)


async def _walk(files: JobFiles, top: str, errors: list[str]) -> list[tuple[str, int]]:
    """The regular files under `top`, as (path relative to it, size), sorted by path."""
    found, pending = [], [""]
    while pending:
        directory = pending.pop()
        where = f"{top}/{directory}".rstrip("/")
        try:
            entries = await files.listdir(where)
        except OSError as e:
            errors.append(f"{where}: not read: {e.strerror or e}")
            continue
        for entry in entries:
            if entry.name in (b".", b".."):
                continue
            path = directory + entry.name.decode(errors="replace")
            if b"/" in entry.name or not _is_utf8(entry.name):  # "/": a broken SFTP server
                errors.append(f"{path}: skipped: not a usable file name")
            elif stat.S_ISLNK(entry.mode):
                errors.append(f"{path}: refused: a symbolic link")
            elif stat.S_ISDIR(entry.mode):
                pending.append(path + "/")
            elif stat.S_ISREG(entry.mode):
                found.append((path, entry.size))
    return sorted(found)


def _is_utf8(name: bytes) -> bool:
    """Artifact names end up in JSON and URLs, which hold text, not arbitrary bytes."""
    try:
        name.decode()
    except UnicodeDecodeError:
        return False
    return True


def _cap(n: int) -> str:
    return f"{n / 10**6:g} MB" if n >= 10**6 else f"{n} bytes"
