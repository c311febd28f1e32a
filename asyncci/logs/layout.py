"""The cut of an over-long log: past `max_bytes`, the middle of a log is replaced by a
marker that counts the bytes cut; `Layout` says where the logical stream (every byte ever
written) lies in the file."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

_MARKER = re.compile(rb"\n\[asyncci: (\d+) bytes cut from the middle of this log\]\n")
READ_CHUNK = 1 << 20


def cut_marker(cut: int) -> bytes:
    """What stands for the `cut` bytes taken out of a log's middle."""
    return b"\n[asyncci: %d bytes cut from the middle of this log]\n" % cut


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


def read_layout(fd: int, head: int) -> Layout:
    """The layout of the open log `fd`, as the marker after its head (if any) says."""
    found = _MARKER.match(os.pread(fd, 80, head))
    return Layout(head, int(found[1]), len(found[0])) if found else Layout(head)


def read_chunks(fd: int, start: int, end: int) -> Iterator[bytes]:
    """The file's bytes from `start` to `end` (or its end), a bounded piece at a time."""
    while start < end and (chunk := os.pread(fd, min(READ_CHUNK, end - start), start)):
        yield chunk
        start += len(chunk)

