"""The wrapper's protocol, which local and SSH hosts share: what `job.sh` is fed, where it
puts things, how its streams are read.

A host runs `job.sh` fed over stdin: the wrapper's text after a preamble of shell-quoted
assignments, so job data never reaches a command line. The host's layout under its
workdir (workspaces, job directories, mirrors) is decided here alone and handed to the
wrapper, which makes up no path. The wrapper's stdout is the job's log and its last
stderr line says how the job ended.
"""

from __future__ import annotations

import asyncio
import shlex
from importlib.resources import files
from typing import Protocol

from ..config import HostConfig
from ..config.checks import JOB_VAR_PREFIX
from ..logs.joblog import JobLog
from ..model import Capability
from .base import NO_RUN, HostLost, JobRun, Outcome
from .collection import ARTIFACTS_DIR, JUNIT_DIR

# Reads of up to 1 MiB, never lines (~3 µs of Python each). asyncssh reopens a channel's
# whole window whenever a read makes room in its buffer: 64 KiB reads behind a faster
# writer let that buffer grow by the log's size (bench/log_throughput.py: 250 MB of RSS).
CHUNK = 1 << 20
QUIET_S = 0.5
# job.sh, after the functions kept in files of their own: one text, sent whole.
WRAPPER = "".join(files(__package__).joinpath(name).read_text()
                  for name in ("checkout.sh", "collect.sh", "job.sh"))
# The command line every host runs: fixed text that reads the wrapper's bytes (their count
# is its one argument) from stdin, in large reads (bash reading a script from a pipe would
# read it a byte at a time) and with no program (`head -c` costs a process); the rest of
# stdin stays for the server's `forget` (see job.sh).
READ_WRAPPER = 'LC_ALL=C read -rN "$0" w && eval "$w"'
FORGET = b"forget\n"
JOBS = "jobs"  # the attempts' directories, under the workdir


def slot_workspace(repo: str, slot: int) -> str:
    """One workspace per repo and slot for trusted jobs, cleaned for each job."""
    return f"ws/{repo}/{slot}"


def run_workspace(run: JobRun) -> str:
    """Where an attempt runs: an untrusted job's workspace is its attempt's own, which no
    other job ever used."""
    return f"ws/untrusted/{run.dirname}" if run.untrusted else slot_workspace(run.repo, run.slot)


def job_dir(run: JobRun) -> str:
    """The attempt's log, status and collected files."""
    return f"{JOBS}/{run.dirname}"


def mirror(repo: str) -> str:
    """The host's cached clone of the repo, which every workspace of it borrows from."""
    return f"mirrors/{repo}.git"


class Wrapper:
    """job.sh as one host runs it: its input for each mode, and the host's paths, each
    relative to the workdir given (the build user's home for a relative one)."""

    def __init__(self, config: HostConfig, workdir: str, kill_grace: float) -> None:
        self._config = config
        self._workdir = workdir
        self._grace = kill_grace

    def workspace(self, repo: str, slot: int) -> str:
        return self._under(slot_workspace(repo, slot))

    def job_dir(self, run: JobRun) -> str:
        return self._under(job_dir(run))

    def _under(self, path: str) -> str:
        return f"{self._workdir.rstrip('/')}/{path}"

    def input(self, mode: str, run: JobRun = NO_RUN, offset: int = 0,
              tidy: bool = False) -> bytes:
        """The wrapper with its preamble: every value shell-quoted, so a branch named
        `$(rm -rf ~)` or `--upload-pack=x` stays data. `tidy` (a probe): also remove the
        directories of attempts long over."""
        host = self._config
        start = mode == "start"
        collect = start and run.artifact_cap > 0
        slot = str(run.slot)
        values = {
            "AC_MODE": mode,
            "AC_WORKDIR": self._workdir,
            "AC_WS": run_workspace(run),
            "AC_DIR": job_dir(run),
            "AC_JOBS": JOBS if tidy else "",
            "AC_MIRROR": mirror(run.repo),
            "AC_FRESH": "1" if run.untrusted else "",
            "AC_CONFINE": str(run.confinement or "") if start else "",
            "AC_IMAGE": run.image,
            "AC_NETWORK": "1" if run.network else "",
            "AC_ENGINE": "\n".join(host.container_command),
            "AC_ENGINE_OPTIONS": "\n".join(host.container_options),
            "AC_DEVICES": "\n".join(d.replace("{slot}", slot) for d in host.slot_devices),
            "AC_HIDE": "\n".join(host.hidden),
            "AC_JOB": run.dirname,
            "AC_URL": run.url,
            "AC_SHA": run.sha,
            "AC_REF": run.ref,
            "AC_OFFSET": str(offset),
            "AC_GRACE": str(round(self._grace * 10)),  # tenths: bash counts in integers
            "AC_SCRIPT": run.script if start else "",
            "AC_ARTIFACTS": "\n".join(run.artifacts) if collect else "",
            "AC_JUNIT": "\n".join(run.junit) if collect else "",
            "AC_CAP": str(run.artifact_cap),
            "AC_JUNIT_DIR": JUNIT_DIR if collect else "",
            "AC_ARTIFACTS_DIR": ARTIFACTS_DIR if collect else "",
            # Each of the job's variables on its own: one environment string holds at most
            # 128 KiB (a certificate or two in one would not fit).
            **({JOB_VAR_PREFIX + k: v for k, v in run.env.items()} if start else {}),
        }
        if any("\0" in v for v in values.values()):  # bash's `read` drops it, then waits
            raise ValueError("a NUL character cannot reach a job (its script, env or secrets)")
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
