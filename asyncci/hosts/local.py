"""The build host on the server's own machine: `job.sh` in a local bash.

The job itself is detached from the server (its own session, started by the wrapper), so
it outlives a server restart; only the streaming wrapper is the server's child. The
wrapper starts from a minimal environment: the server's own holds its tokens, and a job
can read its parents' environments through /proc.
"""

from __future__ import annotations

import asyncio
import os
import signal
import shlex
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from ..config import HostConfig
from ..logs.joblog import JobLog
from ..model import HostState
from .base import Collected, HostLost, JobRun, Outcome
from .collection import Entry, collect_files
from .wrapper import FORGET, READ_WRAPPER, Wrapper, capabilities, pump

COPY_CHUNK = 8 << 20  # copied in the kernel; other tasks run between chunks
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "SHELL")  # all the wrapper inherits


class LocalHost:
    def __init__(self, config: HostConfig, kill_grace: float) -> None:
        self.name = config.name
        self.labels = frozenset(config.labels)
        self.capabilities, self.abilities = capabilities(config, None)
        self.slots = config.slots
        self.state = HostState.ONLINE
        self.last_error: str | None = None
        self.latency_ms: float | None = 0.0
        self.offline_since: datetime | None = None  # it is this machine: never away
        self._config = config
        self._wrapper = Wrapper(config, str(Path(config.workdir).absolute()), kill_grace)
        self._on_change: Callable[[], None] = lambda: None

    def watch(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change

    async def maintain(self) -> None:
        """No connection to keep: only learn once what this machine can confine with."""
        try:
            probed = await self._probe(tidy=True)
        except HostLost as e:
            self.last_error = str(e)
            return
        self.capabilities, self.abilities = capabilities(self._config, probed)
        self._on_change()

    async def run(self, run: JobRun, log: JobLog, attach: bool) -> Outcome:
        mode = "attach" if attach else "start"
        proc = await self._spawn(self._wrapper.input(mode, run, log.raw_offset), keep_open=True)
        try:
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            outcome = await pump(proc.stdout, proc.stderr, log)
            if outcome.told:
                proc.stdin.write(FORGET)
            proc.stdin.close()
            await proc.wait()
            return outcome
        finally:
            # On cancel (server shutdown) only the streaming wrapper goes; the job goes on.
            await _end(proc)

    async def kill(self, run: JobRun, reap: bool = False) -> None:
        mode = "reap" if reap else "kill"
        status, out = await self._command(self._wrapper.input(mode, run))
        if status != 0:
            raise HostLost(f"{mode} of job {run.dirname} failed (exit {status}): {out}")

    def shell_command(self, repo: str, slot: int) -> str | None:
        return f"cd {shlex.quote(self._wrapper.workspace(repo, slot))} && exec bash"

    async def probe(self) -> str:
        probed = await self._probe()
        return f"{probed.splitlines()[0]}; {capabilities(self._config, probed)[1]}"

    async def _probe(self, tidy: bool = False) -> str:
        status, out = await self._command(self._wrapper.input("probe", tidy=tidy))
        if status != 0:
            raise HostLost(out or "probe failed")
        return out

    async def _command(self, data: bytes) -> tuple[int, str]:
        """A short wrapper run to its end: exit status and output."""
        proc = await self._spawn(data)
        try:
            out, _ = await proc.communicate()
        finally:
            await _end(proc)  # cancelled: leave nothing behind
        return proc.returncode or 0, out.decode(errors="replace").strip()

    async def collect(self, run: JobRun, dest: Path) -> Collected:
        return await collect_files(_LocalFiles(Path(self._wrapper.job_dir(run))), dest,
                                   run.artifact_cap)

    @staticmethod
    async def _spawn(data: bytes, keep_open: bool = False) -> asyncio.subprocess.Process:
        """The wrapper, fed `data`; stdin stays open for FORGET with `keep_open`."""
        try:
            proc = await asyncio.create_subprocess_exec(
                "bash", "-c", READ_WRAPPER, str(len(data)),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={k: os.environ[k] for k in BASE_ENV if k in os.environ},
                start_new_session=True,  # its group is what `_end` kills; never the job's
            )
        except OSError as e:
            raise HostLost(f"cannot start bash: {e}") from e
        assert proc.stdin is not None
        proc.stdin.write(data)
        await proc.stdin.drain()
        if not keep_open:
            proc.stdin.close()
        return proc


async def _end(proc: asyncio.subprocess.Process) -> None:
    """Stop a wrapper that is still running, with what it started in its group (a `tail`
    holding its pipes would keep `wait()` waiting); the job has a session of its own."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await proc.wait()


class _LocalFiles:
    """An attempt's directory on this machine. Files are opened with O_NOFOLLOW: one
    swapped for a symlink after it was listed is not followed."""

    def __init__(self, root: Path) -> None:
        self._root = root

    async def listdir(self, path: str) -> list[Entry]:
        try:
            with os.scandir(self._root / path) as entries:
                return [Entry(os.fsencode(e.name), (s := e.stat(follow_symlinks=False)).st_mode,
                              s.st_size) for e in entries]
        except FileNotFoundError:
            return []

    async def copy(self, path: str, target: Path, limit: int) -> int:
        # A copy, not a link: the file here is a hard link into the workspace, which the
        # slot's next job may change in place.
        source = os.open(self._root / path, os.O_RDONLY | os.O_NOFOLLOW)
        copied = 0
        try:
            with open(target, "wb") as out:
                while copied < limit and (sent := os.sendfile(
                        out.fileno(), source, None, min(COPY_CHUNK, limit - copied))):
                    copied += sent
                    await asyncio.sleep(0)
        finally:
            os.close(source)
        return copied

    async def read(self, path: str, limit: int) -> bytes:
        with open(os.open(self._root / path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
            return f.read(limit)
