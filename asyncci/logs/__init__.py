"""Job logs on the server: files under data_dir/logs, secret masking (`masking`), the size
cap (`layout`), reads from an offset, arrival times (`timeline`), and waiting for more
(what live viewers do); and the owner of each job's artifacts (`artifacts`).

A log file is what users see: masked and capped. A job's log is written through its
`JobLog` (`joblog`). Past `max_bytes` the middle of a log is replaced by a marker; a
reader holding an offset past the cut sees the file shrink (its offset then points into
newer text). This package never knows about job states, hosts or HTTP, and never lets a
secret reach a file, even split across chunks.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from pathlib import Path

from .joblog import JobLog
from .layout import Layout, read_chunks, read_layout
from .timeline import Timeline, now_ms

_RECENTLY_CLOSED = 4096


class Logs:
    """Owns data_dir/logs: `{id}.log` and its sidecar `{id}.times`, and while a job runs
    `{id}.offset` (and briefly `{id}.cut` and `{id}.times.new`). Wakes waiters when a log
    grows or is closed."""

    def __init__(self, directory: Path, max_bytes: int,
                 clock: Callable[[], int] = now_ms) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.clock = clock
        directory.mkdir(parents=True, exist_ok=True)
        self._events: dict[int, asyncio.Event] = {}
        self._waiters: Counter[int] = Counter()
        self._closed: dict[int, None] = {}  # recent ones, in order; a hint, the store knows

    def path(self, job_id: int) -> Path:
        return self.directory / f"{job_id}.log"

    def times_path(self, job_id: int) -> Path:
        return self.directory / f"{job_id}.times"

    def timeline(self, job_id: int) -> Timeline:
        """The log's sidecar, to use in a `with` block."""
        return Timeline(self.times_path(job_id))

    def layout(self, job_id: int) -> Layout:
        """Where the log's head, marker and tail are: read from the marker, if any."""
        try:
            fd = os.open(self.path(job_id), os.O_RDONLY)
        except FileNotFoundError:
            return Layout(self.max_bytes // 2)
        try:
            return read_layout(fd, self.max_bytes // 2)
        finally:
            os.close(fd)

    def chunks(self, job_id: int, start: int, end: int) -> Generator[bytes, None, None]:
        """The log's bytes from `start` to `end` (or its end), read from one open file a
        bounded piece at a time: a 50 MB log is never one string."""
        try:
            fd = os.open(self.path(job_id), os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            yield from read_chunks(fd, start, end)
        finally:
            os.close(fd)

    def open(self, job_id: int, secrets: Sequence[str] = ()) -> JobLog:
        self._closed.pop(job_id, None)
        return JobLog(self, job_id, secrets)

    def size(self, job_id: int) -> int:
        try:
            return self.path(job_id).stat().st_size
        except FileNotFoundError:
            return 0

    def read(self, job_id: int, offset: int, limit: int = 1 << 20) -> bytes:
        try:
            with open(self.path(job_id), "rb") as f:
                f.seek(offset)
                return f.read(limit)
        except FileNotFoundError:
            return b""

    def delete(self, job_id: int) -> None:
        for suffix in ("log", "offset", "cut", "times", "times.new"):
            (self.directory / f"{job_id}.{suffix}").unlink(missing_ok=True)
        self._closed.pop(job_id, None)

    def close(self, job_id: int) -> None:
        """The job is finished: its log is complete; wake every waiter for good."""
        (self.directory / f"{job_id}.offset").unlink(missing_ok=True)
        self._closed[job_id] = None
        if len(self._closed) > _RECENTLY_CLOSED:
            del self._closed[next(iter(self._closed))]
        self._wake(job_id)

    def is_closed(self, job_id: int) -> bool:
        """Closed in this process, recently: a hint for waiters; the store has the truth."""
        return job_id in self._closed

    async def wait(self, job_id: int, offset: int, timeout: float) -> None:
        """Return once the log is longer than `offset`, is closed, or `timeout` passed."""
        self._waiters[job_id] += 1
        try:
            async with asyncio.timeout(timeout):
                while self.size(job_id) <= offset and job_id not in self._closed:
                    await self._events.setdefault(job_id, asyncio.Event()).wait()
        except TimeoutError:
            pass
        finally:
            self._waiters[job_id] -= 1
            if not self._waiters[job_id]:
                del self._waiters[job_id]
                self._events.pop(job_id, None)

    def _wake(self, job_id: int) -> None:
        event = self._events.pop(job_id, None)
        if event is not None:
            event.set()
