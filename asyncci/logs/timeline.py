"""A log's sidecar, `{id}.times`: when the log's bytes arrived.

Fixed-size marks (logical offset, line ends before it, time), one per write when time
moved on or many bytes came since the last. Offsets are logical (bytes ever written, cut
ones included), so a cut never changes a mark; it only drops the marks of the bytes it
removed and adds one where the kept tail begins, so that line numbers stay those of the
whole log.
"""

from __future__ import annotations

import bisect
import os
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, overload

MARK = struct.Struct("<QQQ")  # logical offset, line ends before it, arrival in ms since the epoch
TICK_MS = 100  # a new mark once time moved on this much: times to a tenth of a second...
STRIDE = 1 << 18  # ...or once this many bytes came: a line number is never counted far


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Mark(NamedTuple):
    """The log's byte at logical `offset` follows `lines` line ends and arrived at `ms`
    (since the epoch), as did every byte after it up to the next mark."""
    offset: int
    lines: int
    ms: int


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
