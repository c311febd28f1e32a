"""The build host on the server's own machine: `job.sh` in a local bash.

The job itself is detached from the server (its own session, started by the wrapper), so
it outlives a server restart; only the streaming wrapper is the server's child.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from pathlib import Path

from ..config import HostConfig
from ..logs import JobLog
from ..model import HostState
from .base import PROBE, READ_WRAPPER, HostLost, JobRun, Outcome, pump, workspace_path, wrapper_input


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
