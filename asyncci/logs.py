"""Job logs on the server: files under data_dir/logs, secret masking, the size cap, reads
from an offset, and waiting for more (what live viewers do).

A log file is what users see: masked and capped. Beside it, `{id}.offset` records how many
bytes of the host's raw `job.log` the file reflects together with the file's size and the
bytes cut so far, so after a SIGKILL the file is cut back to that size and streaming
resumes at that raw offset: nothing lost, nothing doubled. Past `max_bytes` the middle of
a log is replaced by a marker; a reader holding an offset past the cut sees the file
shrink (its offset then points into newer text). This module never knows about job
states, hosts or HTTP, and never lets a secret reach a file, even split across chunks.

`{id}.times` (the sidecar) says when the log's bytes arrived: fixed-size marks
(logical offset, line ends before it, time), one per write when time moved on or many
bytes came since the last. Offsets are logical (bytes ever written, cut ones included),
so a cut never changes a mark; it only drops the marks of the bytes it removed and adds
one where the kept tail begins, so that line numbers stay those of the whole log.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import os
import re
import struct
import time
from collections import Counter
from collections.abc import Callable, Collection, Generator, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, overload

from .config import MIN_SECRET

MASK = b"***"
_META = "%020d %020d %020d\n"  # raw offset, file size, bytes cut: fixed width, one pwrite
_MARKER = re.compile(rb"\n\[asyncci: (\d+) bytes cut from the middle of this log\]\n")
_RECENTLY_CLOSED = 4096
_LINE_END = re.compile(rb"[\r\n]")
_NOT_LINE_END = re.compile(rb"[^\r\n]")
_LINE_ENDS = re.compile(rb"[\r\n]+")
_PIECES = re.compile(rb"([^\r\n]+)([\r\n]*)")
MARK = struct.Struct("<QQQ")  # logical offset, line ends before it, arrival in ms since the epoch
TICK_MS = 100  # a new mark once time moved on this much: times to a tenth of a second...
STRIDE = 1 << 18  # ...or once this many bytes came: a line number is never counted far
READ_CHUNK = 1 << 20


def _marker(cut: int) -> bytes:
    return b"\n[asyncci: %d bytes cut from the middle of this log]\n" % cut


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Mark(NamedTuple):
    """The log's byte at logical `offset` follows `lines` line ends and arrived at `ms`
    (since the epoch), as did every byte after it up to the next mark."""
    offset: int
    lines: int
    ms: int


@dataclass(frozen=True)
class Layout:
    """Where the logical stream (every byte ever written) lies in the file: all of it, or
    after a cut its head, a marker of `marker` bytes and its tail."""
    head: int
    cut: int = 0
    marker: int = 0

    @property
    def tail(self) -> int:
        """The file offset where the kept tail begins."""
        return self.head + self.marker if self.cut else self.head

    def to_file(self, offset: int) -> int:
        """The file offset of logical `offset`; a byte that was cut maps to the tail."""
        if not self.cut or offset < self.head:
            return offset
        return max(offset - self.cut, self.head) + self.marker

    def to_logical(self, at: int) -> int:
        """The logical offset of file offset `at`; the marker maps to the tail."""
        if not self.cut or at < self.head:
            return at
        return max(at - self.marker, self.head) + self.cut


def _layout(fd: int, head: int) -> Layout:
    found = _MARKER.match(os.pread(fd, 80, head))
    return Layout(head, int(found[1]), len(found[0])) if found else Layout(head)


class Timeline(Sequence[Mark]):
    """A log's sidecar, read by bisection: a page looks up a few marks, never all."""

    def __init__(self, path: Path) -> None:
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # a log from before sidecars, or a new one
            self._fd, self._n = -1, 0
        else:
            self._n = os.fstat(self._fd).st_size // MARK.size  # a mark half-written is none

    def __enter__(self) -> Timeline:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> Mark: ...
    @overload
    def __getitem__(self, index: slice) -> list[Mark]: ...

    def __getitem__(self, index: int | slice) -> Mark | list[Mark]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._n)
            if stop <= start:
                return []
            data = os.pread(self._fd, (stop - start) * MARK.size, start * MARK.size)
            return [Mark(*m) for m in MARK.iter_unpack(data)][::step]
        if not -self._n <= index < self._n:
            raise IndexError(index)
        return Mark(*MARK.unpack(os.pread(self._fd, MARK.size, (index % self._n) * MARK.size)))

    def at(self, offset: int) -> Mark | None:
        """The last mark at or before logical `offset`."""
        i = bisect.bisect_right(self, offset, key=lambda m: m.offset)
        return self[i - 1] if i else None

    def before_line(self, lines: int) -> Mark | None:
        """The last mark with fewer than `lines` line ends before it: the line that
        follows the `lines`-th line end begins after it."""
        i = bisect.bisect_left(self, lines, key=lambda m: m.lines)
        return self[i - 1] if i else None

    def between(self, start: int, end: int) -> list[Mark]:
        """The marks at logical offsets from `start` to before `end`."""
        return self[bisect.bisect_left(self, start, key=lambda m: m.offset):
                    bisect.bisect_left(self, end, key=lambda m: m.offset)]


def secret_forms(secret: str) -> set[bytes]:
    """The byte strings that reveal `secret`: itself, each line of a multi-line one (printed
    alone, a line gives away as much; GitHub Actions masks them too), and the stable middle
    of its base64 encoding at each of the three alignments (standard and urlsafe). Line ends
    around a secret are no part of it: a value read from a file often ends with one."""
    raw = secret.encode().strip(b"\r\n")
    forms = {raw} | {line.strip() for line in _LINE_ENDS.split(raw)}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)
        # The edge characters mix in bits of whatever surrounds the secret: not stable.
        stable = encoded[-(-8 * shift // 6):(8 * (shift + len(raw))) // 6]
        forms |= {stable, stable.replace(b"+", b"-").replace(b"/", b"_")}
    # The floor the config puts on secrets: a shorter form would garble the log.
    return {form for form in forms if len(form) >= MIN_SECRET}


def _pattern(form: bytes) -> bytes:
    """`form` as a regex that also matches it wrapped over lines, as `base64` wraps at 76
    columns from whatever column the secret's part begins at, and with CRLF line ends."""
    out = []
    for text, ends in _PIECES.findall(form):
        out.append(rb"(?:\r?\n)?".join(re.escape(text[i:i + 1]) for i in range(len(text))))
        out.append(ends.replace(b"\r\n", b"\n").replace(b"\r", rb"\r").replace(b"\n", rb"\r?\n"))
    return b"".join(out)


def masking_pattern(forms: Collection[bytes]) -> re.Pattern[bytes]:
    """One alternation of all `forms` (at least one), longest first: where one secret begins
    another, the longer one is masked whole."""
    ordered = sorted(forms, key=lambda f: (len(_unwrap(f)), f), reverse=True)
    return re.compile(b"|".join(map(_pattern, ordered)))


def _unwrap(data: bytes) -> bytes:
    return data.replace(b"\n", b"").replace(b"\r", b"")


class _Unwrapped:
    """A chunk without its line ends, where a form is one `find` away however it was
    wrapped, and the way back to the chunk's offsets."""

    def __init__(self, data: bytes) -> None:
        self.data, self.text = data, _unwrap(data)

    def offset(self, at: int) -> int:
        """The chunk's offset of `text[at]`."""
        return at + bisect.bisect_right(self._before, at)

    def at(self, offset: int) -> int:
        """The index in `text` of the first byte at or after `offset` that is no line end."""
        return offset - bisect.bisect_left(self._ends, offset)

    @cached_property
    def _ends(self) -> list[int]:
        """Offsets of the chunk's line ends: looked for only once a form is found."""
        return [m.start() for m in _LINE_END.finditer(self.data)]

    @cached_property
    def _before(self) -> list[int]:
        """For each line end, how many other bytes come before it."""
        return [end - n for n, end in enumerate(self._ends)]


class Masker:
    """Replaces secrets by `***` in a byte stream, as if it had seen the stream whole.

    At a chunk border it holds back only an end of the data that begins some secret's
    form, so a live log never stalls on a line that merely ended."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._forms = {f for s in secrets if s for f in secret_forms(s)}
        # Each form is looked for without its line ends, in the text without its own.
        self._keys = sorted({_unwrap(f) for f in self._forms})
        self._short = {k[:n] for k in self._keys for n in range(1, min(len(k), 8))}
        # A match has at most a CRLF after each byte of its form: none, nor its start, is
        # this long.
        self._reach = 3 * max(map(len, self._forms), default=0)
        self._held = b""

    @property
    def held(self) -> int:
        return len(self._held)

    def feed(self, chunk: bytes) -> bytes:
        if not self._keys:
            return chunk
        data = self._held + chunk if self._held else chunk
        return self._mask(data, *self._unfinished(data))

    def flush(self) -> bytes:
        return self._mask(self._held, 0, 0) if self._held else b""

    @cached_property
    def _pattern(self) -> re.Pattern[bytes]:
        # Compiled once a key is found (most jobs never print a secret): for a long secret,
        # such as a private key, compiling takes a good part of a second.
        return masking_pattern(self._forms)

    def _mask(self, data: bytes, held: int, pending: int) -> bytes:
        """Mask `data` but for its last `held` bytes (`pending` of them no line ends),
        which are kept for the next chunk."""
        view = _Unwrapped(data)
        text, end = view.text, len(view.text)
        safe = end - pending  # a match starting here or later might grow
        # bytes.find per key is ~10x faster than a regex scan of an alternation; the
        # pattern then picks the longest form at the leftmost start, as a whole scan would.
        out, pos = [], 0
        found = [i if (i := text.find(k)) >= 0 else end for k in self._keys]
        while (start := min(found)) < safe:
            at = view.offset(start)
            if (match := self._pattern.match(data, at)) is None:
                resume = start + 1  # line ends no form has there: two in a row, a lone CR
            else:
                out += [data[pos:at], MASK]
                pos = match.end()
                resume = view.at(pos)
            found = [i if i >= resume else j if (j := text.find(k, resume)) >= 0 else end
                     for i, k in zip(found, self._keys)]
        cut = max(pos, len(data) - held)
        out.append(data[pos:cut])
        self._held = data[cut:]
        return b"".join(out)

    def _unfinished(self, data: bytes) -> tuple[int, int]:
        """The longest end of `data` whose bytes other than line ends are a proper prefix
        of a key: its length, and how many of its bytes are no line ends. A line that
        ended is held too: base64 wraps a secret's encoding over lines."""
        tail = data[-self._reach:]
        text = _unwrap(tail)
        end = best = len(text)
        for key in self._keys:  # an end of 8 bytes or more: find where each key's head is
            at = text.find(key[:8], max(0, end - len(key) + 1))
            while 0 <= at < best and not key.startswith(text[at:]):
                at = text.find(key[:8], at + 1)
            best = at if 0 <= at < best else best
        pending = next((n for n in range(min(7, end), end - best, -1)
                        if text[end - n:] in self._short), end - best)  # or a shorter end
        if not pending:
            return 0, 0
        last = next(islice(_NOT_LINE_END.finditer(tail[::-1]), pending - 1, None))
        return last.end(), pending


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
            self._cut = _layout(self._fd, self._head).cut
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
        return Layout(self._head, self._cut, len(_marker(self._cut))) if self._cut \
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
            chunk.count(b"\n") for chunk in _chunks(self._fd, start, self._size))
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
            after = self._size - self._head - (len(_marker(self._cut)) if self._cut else 0)
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
        end = _marker(self._cut) + tail
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
        if self._cut and end.startswith(_marker(self._cut)) and self._head + len(end) == self._size:
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


def _chunks(fd: int, start: int, end: int) -> Iterator[bytes]:
    """The file's bytes from `start` to `end` (or its end), a bounded piece at a time."""
    while start < end and (chunk := os.pread(fd, min(READ_CHUNK, end - start), start)):
        yield chunk
        start += len(chunk)


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
            return _layout(fd, self.max_bytes // 2)
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
            yield from _chunks(fd, start, end)
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
