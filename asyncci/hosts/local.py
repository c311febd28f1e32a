"""The build host on the server's own machine: `job.sh` in a local bash.

The job itself is detached from the server (its own session, started by the wrapper), so
it outlives a server restart; only the streaming wrapper is the server's child.
"""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import Callable
from pathlib import Path

from ..config import HostConfig
from ..logs import JobLog
from ..model import HostState
from .base import (PROBE, READ_WRAPPER, Collected, Entry, HostLost, JobRun, Outcome, collect_files,
                   job_path, pump, workspace_path, wrapper_input)

COPY_CHUNK = 8 << 20  # copied in the kernel; other tasks run between chunks


class LocalHost:
    def __init__(self, config: HostConfig) -> None:
        self.name = config.name
        self.labels = frozenset(config.labels)
        self.slots = config.slots
        self.state = HostState.ONLINE
        self.last_error: str | None = None
        self.latency_ms: float | None = 0.0
        self._workdir = str(Path(config.workdir).absolute())

    def watch(self, on_change: Callable[[], None]) -> None:
        """A local host is always online: nothing to report."""

    async def maintain(self) -> None:
        """Nothing to keep up: there is no connection."""

    async def run(self, run: JobRun, log: JobLog, attach: bool) -> Outcome:
        mode = "attach" if attach else "start"
        proc = await self._wrapper(wrapper_input(mode, self._workdir, run, log.raw_offset))
        try:
            assert proc.stdout is not None and proc.stderr is not None
            return await pump(proc.stdout, proc.stderr, log)
        finally:
            # On cancel (server shutdown) only the streaming wrapper goes; the job goes on.
            if proc.returncode is None:
                proc.kill()
            await proc.wait()

    async def kill(self, run: JobRun) -> None:
        proc = await self._wrapper(wrapper_input("kill", self._workdir, run))
        await proc.wait()

    def shell_command(self, repo: str, slot: int) -> str | None:
        return f"cd {shlex.quote(workspace_path(self._workdir, repo, slot))} && exec bash"

    async def probe(self) -> str:
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", PROBE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise HostLost(out.decode(errors="replace").strip() or "probe failed")
        return out.decode(errors="replace").strip()

    async def collect(self, run: JobRun, dest: Path) -> Collected:
        return await collect_files(_LocalFiles(Path(job_path(self._workdir, run))), dest,
                                   run.artifact_cap)

    @staticmethod
    async def _wrapper(data: bytes) -> asyncio.subprocess.Process:
        try:
            proc = await asyncio.create_subprocess_exec(
                "bash", "-c", READ_WRAPPER,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            raise HostLost(f"cannot start bash: {e}") from e
        assert proc.stdin is not None
        proc.stdin.write(data)
        await proc.stdin.drain()
        proc.stdin.close()
        return proc


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
