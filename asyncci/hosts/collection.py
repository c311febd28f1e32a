"""Bringing a finished attempt's files to the server, the same way for every kind of host.

Before it ends, the wrapper puts the files the job's `artifacts` and `junit` patterns name
into the attempt's directory; `collect_files` fetches them from there, and each kind of
host only says how to list, copy and read its files (`JobFiles`).
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path
from typing import NamedTuple, Protocol

from ..model.results import Artifact, TestResult
from .base import Collected
from .results import parse_junit

# Where in the attempt's directory job.sh puts what it collected (told in its preamble).
JUNIT_DIR, ARTIFACTS_DIR = "junit", "artifacts"
JUNIT_MAX_BYTES = 50 * 10**6  # a report bigger than this is not read
MAX_TESTS = 100_000  # test cases kept per job: each is a row, and is read for every report


class Entry(NamedTuple):
    name: bytes
    mode: int  # as lstat sees it: a symlink is a symlink, never what it points to
    size: int


class JobFiles(Protocol):
    """An attempt's directory on its host, as one kind of host reaches it. Paths are
    relative to that directory, "/"-separated; a problem with one file raises OSError,
    anything else means the host is gone."""

    async def listdir(self, path: str) -> list[Entry]:
        """The directory's entries, symlinks not followed; [] if it does not exist."""

    async def copy(self, path: str, target: Path, limit: int) -> int:
        """Copy at most `limit` bytes; the number copied."""

    async def read(self, path: str, limit: int) -> bytes: ...


async def collect_files(files: JobFiles, dest: Path, cap: int) -> Collected:
    """Copy `artifacts/` to `dest` and parse the reports in `junit/`, reports first (as
    job.sh does) so a big artifact never crowds them out. job.sh chose the files within
    the cap; names, symlinks and the cap are checked again against anything else that
    wrote there (a process that outlived its job)."""
    if dest.exists():  # a collect cut short by a restart left part of a copy
        shutil.rmtree(dest)
    errors: list[str] = []
    tests, left = await _read_reports(files, cap, errors)
    artifacts = []
    for name, size in await _walk(files, ARTIFACTS_DIR, errors):
        if size > left:
            errors.append(f"{name}: skipped: over the {_cap(cap)} cap per job")
            continue
        target = dest / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # One byte past what is left tells a file that grew since it was listed.
            copied = await files.copy(f"artifacts/{name}", target, left + 1)
        except OSError as e:
            errors.append(f"{name}: not copied: {e.strerror or e}")
            continue
        if copied > left:
            target.unlink()
            errors.append(f"{name}: not kept: it grew past the {_cap(cap)} cap per job"
                          " while it was copied")
            continue
        left -= copied
        artifacts.append(Artifact(name, copied))
    return Collected(artifacts, tests, errors)


async def _read_reports(files: JobFiles, cap: int, errors: list[str]
                        ) -> tuple[list[TestResult], int]:
    """The test cases of the reports in `junit/`, and what is left of the cap."""
    left = cap
    tests: list[TestResult] = []
    for name, size in await _walk(files, JUNIT_DIR, errors):
        if size > JUNIT_MAX_BYTES:
            errors.append(f"{name}: not read: bigger than {_cap(JUNIT_MAX_BYTES)}")
            continue
        if size > left:
            errors.append(f"{name}: not read: over the {_cap(cap)} cap per job")
            continue
        left -= size
        try:
            tests += await parse_junit(await files.read(f"junit/{name}", size),
                                       MAX_TESTS + 1 - len(tests))
        except OSError as e:
            errors.append(f"{name}: not read: {e.strerror or e}")
        except ValueError as e:
            errors.append(f"{name}: {e}")
    if len(tests) > MAX_TESTS:
        errors.append(f"more than {MAX_TESTS} test cases: only the first {MAX_TESTS} are kept")
        del tests[MAX_TESTS:]
    return tests, left


async def _walk(files: JobFiles, top: str, errors: list[str]) -> list[tuple[str, int]]:
    """The regular files under `top`, as (path relative to it, size), sorted by path."""
    found, pending = [], [""]
    while pending:
        directory = pending.pop()
        where = f"{top}/{directory}".rstrip("/")
        try:
            entries = await files.listdir(where)
        except OSError as e:
            errors.append(f"{where}: not read: {e.strerror or e}")
            continue
        for entry in entries:
            if entry.name in (b".", b".."):
                continue
            path = directory + entry.name.decode(errors="replace")
            if b"/" in entry.name or not _is_utf8(entry.name):  # "/": a broken SFTP server
                errors.append(f"{path}: skipped: not a usable file name")
            elif stat.S_ISLNK(entry.mode):
                errors.append(f"{path}: refused: a symbolic link")
            elif stat.S_ISDIR(entry.mode):
                pending.append(path + "/")
            elif stat.S_ISREG(entry.mode):
                found.append((path, entry.size))
    return sorted(found)


def _is_utf8(name: bytes) -> bool:
    """Artifact names end up in JSON and URLs, which hold text, not arbitrary bytes."""
    try:
        name.decode()
    except UnicodeDecodeError:
        return False
    return True


def _cap(n: int) -> str:
    return f"{n / 10**6:g} MB" if n >= 10**6 else f"{n} bytes"
