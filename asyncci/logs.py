"""Job logs on the server: files under data_dir/logs, secret masking, the size cap, reads
from an offset, and waiting for more (what live viewers do).

A log file is what users see: masked and capped. Beside it, `{id}.offset` records how many
bytes of the host's raw `job.log` the file reflects together with the file's size and the
bytes cut so far, so after a SIGKILL the file is cut back to that size and streaming
resumes at that raw offset: nothing lost, nothing doubled. Past `max_bytes` the middle of
a log is replaced by a marker; a reader holding an offset past the cut sees the file
shrink (its offset then points into newer text). This module never knows about job
states, hosts or HTTP, and never lets a secret reach a file, even split across chunks.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import os
import re
from collections import Counter
from collections.abc import Collection, Sequence
from functools import cached_property
from itertools import islice
from pathlib import Path

from asyncci.config import MIN_SECRET

MASK = b"***"
_META = "%020d %020d %020d\n"  # raw offset, file size, bytes cut: fixed width, one pwrite
_MARKER = re.compile(rb"\n\[asyncci: (\d+) bytes cut from the middle of this log\]\n")
_RECENTLY_CLOSED = 4096
_LINE_END = re.compile(rb"[\r\n]")
_NOT_LINE_END = re.compile(rb"[^\r\n]")
_LINE_ENDS = re.compile(rb"[\r\n]+")
_PIECES = re.compile(rb"([^\r\n]+)([\r\n]*)")


def _marker(cut: int) -> bytes:
    return b"\n[asyncci: %d bytes cut from the middle of this log]\n" % cut


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
        of a key: its length, and how many of its bytes are no line ends."""
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
        self._max = logs.max_bytes
        self._head, self._keep = self._max // 2, max(1, self._max // 4)
        self._journal = logs.directory / f"{job_id}.cut"
        self._meta = os.open(logs.directory / f"{job_id}.offset", os.O_RDWR | os.O_CREAT, 0o600)
        self._fd = os.open(logs.path(job_id), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self._open = True
        saved = os.pread(self._meta, 128, 0).split()
        if len(saved) == 3:
            self._raw, self._size, self._cut = map(int, saved)
            self._replay_cut()
        else:  # a new log, or one kept from before: go on after what is there
            self._raw, self._size = 0, os.fstat(self._fd).st_size
            found = _MARKER.match(os.pread(self._fd, 80, self._head))
            self._cut = int(found[1]) if found else 0
            # Saved before the first write: a crash between that write and its save must
            # find a state to cut the file back to, not take the written bytes as kept.
            os.pwrite(self._meta, (_META % (self._raw, self._size, self._cut)).encode(), 0)
        os.ftruncate(self._fd, self._size)  # what a crash wrote past the saved state goes
        self._newline = self._size == 0 or os.pread(self._fd, 1, self._size - 1) == b"\n"

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

    def settle(self) -> None:
        """The host's stream ended for good: write what the masker held back, since no
        more of a secret can follow it."""
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

    def _save(self) -> None:
        os.pwrite(self._meta, (_META % (self._raw, self._size, self._cut)).encode(), 0)
        self._logs._wake(self.job_id)

    def _append(self, data: bytes) -> None:
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
        # The new end goes to a journal before the saved state names it, so a crash at any
        # point leaves either the old state or one `_replay_cut` completes.
        journal = os.open(self._journal, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(journal, end)
        finally:
            os.close(journal)
        self._size = self._head + len(end)
        self._save()
        self._rewrite_end(end)

    def _replay_cut(self) -> None:
        try:
            end = self._journal.read_bytes()
        except FileNotFoundError:
            return
        if self._cut and end.startswith(_marker(self._cut)) and self._head + len(end) == self._size:
            self._rewrite_end(end)  # the saved state already counts this cut
        else:
            self._journal.unlink()

    def _rewrite_end(self, end: bytes) -> None:
        os.ftruncate(self._fd, self._head)
        os.write(self._fd, end)
        self._newline = end.endswith(b"\n")
        os.unlink(self._journal)


class Logs:
    """Owns data_dir/logs: `{id}.log`, and while a job runs `{id}.offset` (and briefly
    `{id}.cut`). Wakes waiters when a log grows or is closed."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._events: dict[int, asyncio.Event] = {}
        self._waiters: Counter[int] = Counter()
        self._closed: dict[int, None] = {}  # recent ones, in order; a hint, the store knows

    def path(self, job_id: int) -> Path:
        return self.directory / f"{job_id}.log"

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
        for suffix in ("log", "offset", "cut"):
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
