"""One job's log being written on the server: masked, capped, resumable after a crash.

Beside the log file, `{id}.offset` records how many bytes of the host's raw `job.log` the
file reflects together with the file's size and the bytes cut so far, so after a SIGKILL
the file is cut back to that size and streaming resumes at that raw offset: nothing lost,
nothing doubled.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .layout import Layout, cut_marker, read_chunks, read_layout
from .masking import Masker
from .timeline import MARK, STRIDE, TICK_MS, Mark, Timeline

if TYPE_CHECKING:
    from . import Logs

_META = "%020d %020d %020d\n"  # raw offset, file size, bytes cut: fixed width, one pwrite


class JobLog:
    """The server's copy of one job's log, being written. Not safe to share between two
    writers; `Logs.open` after a restart picks up where the last saved state left off."""

    def __init__(self, logs: Logs, job_id: int, secrets: Sequence[str]) -> None:
        self._logs, self.job_id = logs, job_id
        self._masker = Masker(secrets)
        self._max, self._clock = logs.max_bytes, logs.clock
        self._head, self._keep = self._max // 2, max(1, self._max // 4)
        self._journal = logs.directory / f"{job_id}.cut"
        self._times_path = logs.times_path(job_id)
        self._new_times = self._times_path.with_name(f"{job_id}.times.new")
        self._meta = os.open(logs.directory / f"{job_id}.offset", os.O_RDWR | os.O_CREAT, 0o600)
        self._fd = os.open(logs.path(job_id), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self._open = True
        saved = os.pread(self._meta, 128, 0).split()
        if len(saved) == 3:
            self._raw, self._size, self._cut = map(int, saved)
            self._replay_cut()
        else:  # a new log, or one kept from before: go on after what is there
            self._raw, self._size = 0, os.fstat(self._fd).st_size
            self._cut = read_layout(self._fd, self._head).cut
            # Saved before the first write: a crash between that write and its save must
            # find a state to cut the file back to, not take the written bytes as kept.
            os.pwrite(self._meta, (_META % (self._raw, self._size, self._cut)).encode(), 0)
        os.ftruncate(self._fd, self._size)  # what a crash wrote past the saved state goes
        self._newline = self._size == 0 or os.pread(self._fd, 1, self._size - 1) == b"\n"
        self._times = self._resume_times()

    @property
    def raw_offset(self) -> int:
        """Bytes of the host's raw log that the file reflects: where streaming resumes."""
        return self._raw

    @raw_offset.setter
    def raw_offset(self, value: int) -> None:  # a new attempt streams a new raw log
        self._raw = value
        self._save()

    def write(self, raw: bytes) -> None:
        held = self._masker.held
        out = self._masker.feed(raw)
        self._raw += len(raw) + held - self._masker.held
        self._append(out)
        self._save()

    def note(self, text: str) -> None:
        """A line from asyncci itself; it is not part of the host's stream."""
        line = text.encode() + b"\n"
        self._append(line if self._newline else b"\n" + line)
        self._save()

    @property
    def holding(self) -> bool:
        """The masker holds back an end that may begin a secret."""
        return self._masker.held > 0

    def settle(self) -> None:
        """The host's stream ended, or went quiet: write what the masker held back. A
        secret printed by accident comes in one burst; a line must not wait for more
        output that may never come."""
        held = self._masker.held
        out = self._masker.flush()
        self._raw += held
        self._append(out)
        self._save()

    def finish(self) -> None:
        """The job is done: settle, and close the log for good."""
        self.settle()
        self.close()
        self._logs.close(self.job_id)

    def close(self) -> None:
        """Stop writing, keeping the saved state (the job goes on, or the server stops)."""
        if self._open:
            self._open = False
            os.close(self._fd)
            os.close(self._meta)
            os.close(self._times)

    @property
    def _layout(self) -> Layout:
        return Layout(self._head, self._cut, len(cut_marker(self._cut))) if self._cut \
            else Layout(self._head)

    def _resume_times(self) -> int:
        """Open the sidecar, dropping the marks of bytes past the saved state (they are
        streamed again), and count on from its last mark."""
        self._logical = self._layout.to_logical(self._size)
        with Timeline(self._times_path) as timeline:
            kept = bisect.bisect_left(timeline, self._logical, key=lambda m: m.offset)
            self._last = timeline[kept - 1] if kept else None
        fd = os.open(self._times_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.ftruncate(fd, kept * MARK.size)
        start = self._layout.to_file(self._last.offset) if self._last else 0
        self._lines = (self._last.lines if self._last else 0) + sum(
            chunk.count(b"\n") for chunk in read_chunks(self._fd, start, self._size))
        return fd

    def _stamp(self, data: bytes) -> None:
        """Mark `data`'s arrival if time moved on or many bytes came since the last mark:
        one fixed-size entry, written before the bytes it marks so that a crash leaves
        none past the saved state that `_resume_times` would not drop."""
        now = self._clock()
        last = self._last
        if last is None or now - last.ms >= TICK_MS or self._logical - last.offset >= STRIDE:
            self._last = Mark(self._logical, self._lines, now)
            os.write(self._times, MARK.pack(*self._last))
        self._logical += len(data)
        self._lines += data.count(b"\n")

    def _save(self) -> None:
        os.pwrite(self._meta, (_META % (self._raw, self._size, self._cut)).encode(), 0)
        self._logs._wake(self.job_id)

    def _append(self, data: bytes) -> None:
        if not data:
            return
        self._stamp(data)
        if self._size + len(data) > self._max:
            if self._size < self._head:
                fill = self._head - self._size
                self._put(data[:fill])
                data = data[fill:]
            after = self._size - self._head - (len(cut_marker(self._cut)) if self._cut else 0)
            if after + len(data) > self._keep:
                return self._cut_middle(data, after + len(data))
        self._put(data)

    def _put(self, data: bytes) -> None:
        if data:
            os.write(self._fd, data)
            self._size += len(data)
            self._newline = data.endswith(b"\n")

    def _cut_middle(self, data: bytes, after: int) -> None:
        """Keep the head, a marker counting every byte cut, and the last quarter. Each cut
        copies at most max/4 bytes after at least max/4 new ones: linear cost overall."""
        tail = data[-self._keep:]
        if len(tail) < self._keep:
            need = self._keep - len(tail)
            tail = os.pread(self._fd, need, self._size - need) + tail
        self._cut += after - self._keep
        end = cut_marker(self._cut) + tail
        # The new end and the new sidecar are written before the saved state names the
        # cut, so a crash at any point leaves either the old state or one `_replay_cut`
        # completes.
        _write_file(self._journal, end)
        self._write_cut_times(self._logical - len(tail), self._lines - tail.count(b"\n"))
        self._size = self._head + len(end)
        self._save()
        self._rewrite_end(end)
        os.close(self._times)
        self._times = os.open(self._times_path, os.O_WRONLY | os.O_APPEND)

    def _write_cut_times(self, tail: int, lines: int) -> None:
        """The sidecar after a cut: the marks of the head and of the kept tail, and one
        where the tail begins (with the line ends before it, which can no longer be
        counted), in a new file that `_rewrite_end` puts in place."""
        with Timeline(self._times_path) as timeline:
            head = timeline[:bisect.bisect_left(timeline, self._head, key=lambda m: m.offset)]
            later = timeline[bisect.bisect_right(timeline, tail, key=lambda m: m.offset):]
            arrived = timeline.at(tail) or self._last
        assert arrived is not None  # this write was marked
        marks = [*head, Mark(tail, lines, arrived.ms), *later]
        self._last = marks[-1]
        _write_file(self._new_times, b"".join(MARK.pack(*m) for m in marks))

    def _replay_cut(self) -> None:
        try:
            end = self._journal.read_bytes()
        except FileNotFoundError:
            return
        if (self._cut and end.startswith(cut_marker(self._cut))
                and self._head + len(end) == self._size):
            self._rewrite_end(end)  # the saved state already counts this cut
        else:
            self._new_times.unlink(missing_ok=True)
            self._journal.unlink()

    def _rewrite_end(self, end: bytes) -> None:
        os.ftruncate(self._fd, self._head)
        os.write(self._fd, end)
        self._newline = end.endswith(b"\n")
        if self._new_times.exists():
            os.replace(self._new_times, self._times_path)
        os.unlink(self._journal)


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)

