"""Job logs on the server: files under data_dir/logs, secret masking, the size cap, reads
from an offset, and waiting for more (what live viewers do).

A log file is what users see: masked and capped. Beside it, `{id}.offset` records how many
bytes of the host's raw `job.log` the file reflects, with the file size at that moment, so
after a crash the file is cut back to that size and streaming resumes at that raw offset:
nothing lost, nothing doubled. When a log passes `max_bytes`, its middle is replaced by a
marker; readers holding an offset past the cut see the file shrink (they start over from
the marker). Nothing here knows about jobs' states, hosts or HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
from collections.abc import Sequence
from pathlib import Path

_SIDECAR = "%020d %020d %020d\n"  # raw offset, file size, bytes cut: fixed width, one pwrite


def secret_forms(secret: str) -> set[bytes]:
    """The byte strings that reveal `secret`: itself, with CRLF line ends, and the stable
    middle of its base64 encoding at each of the three alignments (standard and urlsafe)."""
    raw = secret.encode()
    forms = {raw, raw.replace(b"\n", b"\r\n")}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)
        # Characters mixing in bits of the bytes around the secret are not stable.
        stable = encoded[-(-8 * shift // 6):(8 * (shift + len(raw))) // 6]
        if len(stable) >= 6:
            forms |= {stable, stable.replace(b"+", b"-").replace(b"/", b"_")}
    return {f for f in forms if f}


class Masker:
    """Replaces secrets by `***` in a byte stream. At a chunk border it holds back only the
    end of the data that could begin a secret, so a live log never stalls on a line that
    merely ended: a job that prints and then sleeps is seen at once."""

    def __init__(self, secrets: Sequence[str]) -> None:
        forms = sorted({f for s in secrets if s for f in secret_forms(s)}, key=len, reverse=True)
        self._pattern = re.compile(b"|".join(map(re.escape, forms))) if forms else None
        self._starts = {f[:n] for f in forms for n in range(1, len(f))}
        self._hold = max(map(len, forms), default=1) - 1
        self._held = b""

    @property
    def held(self) -> int:
        return len(self._held)

    def feed(self, chunk: bytes) -> bytes:
        if self._pattern is None:
            return chunk
        data = self._held + chunk
        safe = len(data) - self._unfinished(data)  # a match starting here or later might grow
        out, pos = [], 0
        for match in self._pattern.finditer(data):
            if match.start() >= safe:
                break
            out += [data[pos:match.start()], b"***"]
            pos = match.end()
        cut = max(pos, safe)
        out.append(data[pos:cut])
        self._held = data[cut:]
        return b"".join(out)

    def _unfinished(self, data: bytes) -> int:
        """The length of the longest end of `data` that a secret's form begins with."""
        for n in range(min(self._hold, len(data)), 0, -1):
            if data[-n:] in self._starts:
                return n
        return 0

    def flush(self) -> bytes:
        if self._pattern is None:
            return b""
        data, self._held = self._held, b""
        return self._pattern.sub(b"***", data)


def _marker(cut: int) -> bytes:
    return b"\n[asyncci: %d bytes cut from the middle of this log]\n" % cut


class JobLog:
    """The server's copy of one job's log, being written."""

    def __init__(self, logs: Logs, job_id: int, secrets: Sequence[str]) -> None:
        self._logs = logs
        self.job_id = job_id
        self._path = logs.path(job_id)
        self._masker = Masker(secrets)
        self._max = logs.max_bytes
        self._head = self._max // 2
        self.raw_offset, size, self._cut = 0, 0, 0
        self._sidecar = os.open(logs.directory / f"{job_id}.offset", os.O_RDWR | os.O_CREAT, 0o600)
        saved = os.pread(self._sidecar, 64, 0).split()
        if len(saved) == 3:
            self.raw_offset, size, self._cut = map(int, saved)
        elif self._path.exists():
            size = self._path.stat().st_size
        self._file = open(self._path, "ab")  # noqa: SIM115 - lives as long as the job
        self._file.truncate(size)  # what a crash wrote past the last saved offset goes
        self._size = size

    def write(self, raw: bytes) -> None:
        fed = self.raw_offset + self._masker.held + len(raw)
        self._append(self._masker.feed(raw))
        self.raw_offset = fed - self._masker.held
        self._save()

    def note(self, text: str) -> None:
        """A line from asyncci itself; it is not part of the host's stream."""
        self._append(b"" if self._size == 0 else b"\n")
        self._append(text.encode() + b"\n")
        self._save()

    def finish(self) -> None:
        self._append(self._masker.flush())
        self._save()
        self.close()
        self._logs.close(self.job_id)

    def close(self) -> None:
        """Stop writing (the job goes on elsewhere, or the server stops)."""
        if not self._file.closed:
            self._file.close()
            os.close(self._sidecar)

    def _save(self) -> None:
        self._file.flush()
        os.pwrite(self._sidecar, (_SIDECAR % (self.raw_offset, self._size, self._cut)).encode(), 0)
        self._logs.changed(self.job_id)

    def _append(self, data: bytes) -> None:
        if not data:
            return
        if self._size + len(data) <= self._max:
            self._file.write(data)
            self._size += len(data)
            return
        # Over the cap: keep the head, a marker, and the last quarter; each cut copies at
        # most max/4 bytes after at least max/4 new ones, so the cost stays linear.
        self._file.flush()
        with open(self._path, "rb") as f:
            content = f.read()
        head = content[: self._head]
        rest = content[self._head:]
        if self._cut:
            rest = rest[len(_marker(self._cut)):]
        rest += data
        if len(head) < self._head:
            fill = self._head - len(head)
            head, rest = head + rest[:fill], rest[fill:]
        keep = self._max // 4
        self._cut += max(0, len(rest) - keep)
        self._file.truncate(0)
        self._file.write(head + _marker(self._cut) + rest[-keep:])
        self._size = self._file.tell()


class Logs:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._events: dict[int, asyncio.Event] = {}
        self._closed: set[int] = set()

    def path(self, job_id: int) -> Path:
        return self.directory / f"{job_id}.log"

    def open(self, job_id: int, secrets: Sequence[str] = ()) -> JobLog:
        self._closed.discard(job_id)
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
        for name in (f"{job_id}.log", f"{job_id}.offset"):
            (self.directory / name).unlink(missing_ok=True)
        self._closed.discard(job_id)

    def changed(self, job_id: int) -> None:
        event = self._events.pop(job_id, None)
        if event is not None:
            event.set()

    def close(self, job_id: int) -> None:
        """The job is finished: its log is complete; wake every waiter for good."""
        (self.directory / f"{job_id}.offset").unlink(missing_ok=True)
        if len(self._closed) > 10_000:  # only a hint for waiters; the store has the truth
            self._closed.clear()
        self._closed.add(job_id)
        self.changed(job_id)

    def is_closed(self, job_id: int) -> bool:
        return job_id in self._closed

    async def wait(self, job_id: int, offset: int, timeout: float) -> None:
        """Return once the log is longer than `offset`, is closed, or `timeout` passed."""
        if self.size(job_id) > offset or job_id in self._closed:
            return
        event = self._events.setdefault(job_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
