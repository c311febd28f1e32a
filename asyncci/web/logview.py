"""One job's log on its build page: a window of it, or a search in it.

A page shows a window of a log (logtext makes its lines and sections): whole lines,
numbered as in the whole log, each with the time it arrived. Numbers and times come from
the log's sidecar (asyncci.logs), so no page reads a 50 MB log from its start; a search
reads the whole log, a bounded piece at a time, in a thread. `LogFile` is the part that
reads; the rest decides what to read and what the page's address asks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Generator
from contextlib import closing
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from ..logs import Logs
from ..logs.layout import Layout
from ..logs.timeline import Mark, Timeline
from ..model import JobState
from .keys import LOGS, SEARCHES
from .logtext import Line, Shown, decide, fold, last_state, matching, shown, split_lines
from .params import error, parse_count

# What a page shows of a log at once, in bytes and in lines (a line costs ~10 µs to
# show): a 50 MB log is never one page. A build of many jobs shares it out, each job at
# least MIN_LINES, and the job the address names gets it all.
PAGE, PAGE_LINES, MIN_LINES = 64 * 1024, 1000, 50
CONTEXT = 5  # lines shown above a line that a link points at
MATCHES = 1000  # lines a search lists at most
MAX_QUERY = 200
SHOWN = 500  # characters of a matching line shown in a search's list


# -- reading a log: the thin part --------------------------------------------------------

class LogFile:
    """One job's log file with where its cut is and its sidecar, for one request."""

    def __init__(self, logs: Logs, job_id: int) -> None:
        self.logs, self.job_id = logs, job_id
        self.layout: Layout = logs.layout(job_id)
        self.timeline: Timeline = logs.timeline(job_id)
        self.size = logs.size(job_id)

    def __enter__(self) -> LogFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.timeline.__exit__(kind, value, trace)

    def read(self, start: int, end: int) -> bytes:
        return self.logs.read(self.job_id, start, max(0, end - start))

    def chunks(self, start: int, end: int) -> closing[Generator[bytes, None, None]]:
        return closing(self.logs.chunks(self.job_id, start, end))

    def lines_before(self, at: int) -> int:
        """Line ends before file offset `at`, counted from the sidecar's last mark before it
        (a few hundred KB at most; from the start for a log from before sidecars)."""
        mark = self.timeline.at(self.layout.to_logical(at)) or Mark(0, 0, 0)
        with self.chunks(self.layout.to_file(mark.offset), at) as chunks:
            return mark.lines + sum(chunk.count(b"\n") for chunk in chunks)

    def line_start(self, number: int) -> int:
        """The file offset where line `number` begins: the end if it has not come yet, the
        kept tail if it was cut."""
        ends = number - 1
        mark = self.timeline.before_line(ends) if ends > 0 else None
        if mark is None:
            mark = Mark(0, 0, 0)
        at = self.layout.to_file(mark.offset)
        stop = self.layout.head if self.layout.cut and at < self.layout.head else self.size
        left = ends - mark.lines
        with self.chunks(at, stop) as chunks:
            for chunk in chunks:
                found = -1
                while left and (found := chunk.find(b"\n", found + 1)) >= 0:
                    left -= 1
                if not left:
                    return at + found + 1
                at += len(chunk)
        return self.layout.tail if stop < self.size else self.size

    @property
    def began(self) -> int | None:
        """When the log began, ms since the epoch."""
        return self.timeline[0].ms if len(self.timeline) else None

    def elapsed(self, now: int | None) -> int | None:
        """ms from the log's start to `now`, or (None) to when its last bytes arrived."""
        if not len(self.timeline):
            return None
        return (self.timeline[-1].ms if now is None else now) - self.timeline[0].ms


@dataclass(frozen=True)
class Ask:
    """What the page's address asks of one job's log: the window around a line (`line`,
    a link to it), the one from a line (`start`) or before one, or the end; a search."""
    line: int | None = None
    start: int | None = None
    before: int | None = None
    query: str = ""
    named: bool = False  # the address names this job: it gets a whole page


def window(log: LogFile, ask: Ask, share: int = 1) -> tuple[int, int]:
    """The file offsets of the whole lines a page shows: about PAGE bytes and at most
    PAGE_LINES lines, divided by `share`."""
    size, count = PAGE // share, max(MIN_LINES, PAGE_LINES // share)
    first = ask.start if ask.line is None else max(1, ask.line - CONTEXT)
    if first is not None:
        start = log.line_start(first)
        data = log.read(start, start + size)
        return start, start + first_lines(data, count, start + len(data) >= log.size)
    end = log.size if ask.before is None else log.line_start(ask.before)
    start = max(0, end - size)
    whole = start == 0 or (log.layout.cut and start == log.layout.tail)
    return end - last_lines(log.read(start, end), count, bool(whole)), end


def first_lines(data: bytes, count: int, ends: bool) -> int:
    """How many bytes of `data` its first `count` lines take, a last line without its
    line end included only if `ends` (the log ends there) or it is all there is."""
    at = -1
    for _ in range(count):
        if (at := data.find(b"\n", at + 1)) < 0:
            return len(data) if ends else data.rfind(b"\n") + 1 or len(data)
    return at + 1


def last_lines(data: bytes, count: int, whole: bool) -> int:
    """How many bytes of `data` its last `count` lines take; its first line counts only
    if `whole` (it begins at a line's start) or it is all there is."""
    at = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(count):
        if (at := data.rfind(b"\n", 0, at)) < 0:
            first = data.find(b"\n", 0, len(data) - 1)
            return len(data) if whole or first < 0 else len(data) - first - 1
    return len(data) - at - 1


def window_lines(log: LogFile, start: int, end: int) -> list[Line]:
    """The lines from file offset `start` to `end`, with asyncci's marker of a cut (if it
    falls there) as a line numbered 0, and when each line arrived."""
    layout = log.layout
    pieces = [(start, end)]
    if layout.cut and start < layout.tail and end > layout.head:
        pieces = [(start, min(end, layout.head)), (layout.tail, end)]
    arrived = Arrivals(log, start, end)
    lines: list[Line] = []
    for n, (lo, hi) in enumerate(pieces):
        if n:
            lines.append(Line(0, log.read(layout.head, layout.tail).strip().decode()))
        if lo < hi:
            base = layout.to_logical(lo)
            lines += [Line(number, text, arrived(base + offset)) for number, offset, text
                      in split_lines(log.read(lo, hi), log.lines_before(lo) + 1)]
    return lines


class Arrivals:
    """When the bytes of a window arrived, in ms since the log began: the window's marks
    are few and in order, and its lines are asked in order, so they are walked once."""

    def __init__(self, log: LogFile, start: int, end: int) -> None:
        self.began = log.began
        lo, hi = log.layout.to_logical(start), log.layout.to_logical(end)
        first = log.timeline.at(lo)
        self._marks = deque(([first] if first else []) + log.timeline.between(lo + 1, hi))

    def __call__(self, offset: int) -> int | None:
        marks = self._marks
        while len(marks) > 1 and marks[1].offset <= offset:
            marks.popleft()
        if self.began is None or not marks or marks[0].offset > offset:
            return None
        return marks[0].ms - self.began


# -- search ----------------------------------------------------------------------------

@dataclass
class Found:
    """A search's answer: the matching lines, and whether there were more than it lists."""
    lines: list[Line] = field(default_factory=list)
    more: bool = False


async def _search(request: web.Request, job_id: int, query: str) -> Found:
    """A search in a thread of its own, with a file of its own, a few at once: each reads
    the whole log, and anyone may ask on a public server."""
    searches = request.app[SEARCHES]
    if searches.locked():
        raise web.HTTPServiceUnavailable(text="Too many log searches at once: try again.",
                                         headers={"Retry-After": "2"})
    async with searches:
        return await asyncio.to_thread(_search_in, request.app[LOGS], job_id, query)


def _search_in(logs: Logs, job_id: int, query: str) -> Found:
    with LogFile(logs, job_id) as log:
        return search(log, query)


def search(log: LogFile, query: str) -> Found:
    """Lines holding `query`, case-insensitive plain text, in the whole log: its head and
    its kept tail, numbered as in the whole log. Run in a thread: a 50 MB log takes a
    while, and the event loop must not wait on it."""
    found, needle = Found(), query.lower()
    layout = log.layout
    parts = [(0, layout.head), (layout.tail, log.size)] if layout.cut else [(0, log.size)]
    last = 0
    for start, end in parts:
        with log.chunks(start, end) as chunks:
            for number, text in matching(chunks, needle, log.lines_before(start) + 1):
                if number == last:
                    continue  # a line cut in two pieces, both holding the query
                if len(found.lines) == MATCHES:
                    found.more = True
                    return found
                found.lines.append(Line(number, last_state(text)[:SHOWN]))
                last = number
    return found


# -- the page's part -------------------------------------------------------------------

@dataclass
class LogView:
    """One job's log box, as the template joblog.html shows it."""
    job_id: int
    blocks: list[Shown]
    at_end: bool  # the window ends where the log does: the box opens scrolled there
    live: bool  # ...and the job runs: the page's script follows it from `resume`
    resume: int
    next_line: int  # the number of the line the script shows next
    began: int | None  # when the log began, ms since the epoch
    now: int  # the server's clock, which the script's times follow
    links: dict[str, str]  # Start, Earlier, Later, End: those that lead anywhere
    times: bool
    wrap: bool
    times_url: str
    wrap_url: str
    found: Found | None
    hits: list[tuple[Line, str]]  # a search's lines, each with a link to it in the log
    clear_url: str
    query: str


def ask_of(request: web.Request, job_id: int) -> Ask:
    """The page's `?job=ID&line=N` (or `start=N`, `before=N`, `q=TEXT`), if it names this
    job; bad input is a 400, not a page that guesses."""
    query = request.query
    raw_job = query.get("job", "")
    job = parse_count(raw_job) if raw_job else None
    if raw_job and job is None:
        raise error(web.HTTPBadRequest, f"job must be a job id, got {raw_job[:40]!r}")
    numbers: dict[str, int | None] = {}
    for name in ("line", "start", "before"):
        raw = query.get(name, "")
        numbers[name] = value = parse_count(raw) if raw else None
        if raw and not value:
            raise error(web.HTTPBadRequest, f"{name} must be a line number, got {raw[:40]!r}")
    text = query.get("q", "")
    if len(text) > MAX_QUERY or "\n" in text or "\r" in text:
        raise error(web.HTTPBadRequest, f"a search is one line of at most {MAX_QUERY} characters")
    if job is None and (text or any(numbers.values())):
        raise error(web.HTTPBadRequest, "name the job whose log to page or search: ?job=ID")
    return Ask(**numbers, query=text.strip(), named=True) if job == job_id else Ask()


def address(request: web.Request, fragment: str, **changes: str | None) -> str:
    """This page's address with some of its query changed (None: taken out)."""
    query = {k: v for k, v in request.query.items() if k not in changes}
    query.update({k: v for k, v in changes.items() if v is not None})
    return "?" + urlencode(query) + fragment


def page_links(request: web.Request, job_id: int, lines: list[Line], start: bool,
               end: bool) -> dict[str, str]:
    """Start · Earlier · Later · End of this job's log; other jobs' logs stay at their end."""
    here = {"job": str(job_id), "line": None, "start": None, "before": None, "q": None}
    numbers = [line.number for line in lines if line.number]
    links = {}
    if start:
        links["Start"] = address(request, f"#log-{job_id}", **here | {"start": "1"})
        links["Earlier"] = address(request, f"#log-{job_id}",
                                   **here | {"before": str(numbers[0] if numbers else 1)})
    if end:
        links["Later"] = address(request, f"#log-{job_id}",
                                 **here | {"start": str(numbers[-1] + 1 if numbers else 1)})
        links["End"] = address(request, f"#log-{job_id}", **here | {"job": None})
    return links


async def log_view(request: web.Request, job: dict[str, Any], jobs: int) -> LogView:
    """The box of one job's log on the page of its build of `jobs` jobs, which share the
    page's lines but for the job the address names."""
    job_id, ask, logs = job["id"], ask_of(request, job["id"]), request.app[LOGS]
    state = JobState(job["state"])
    with LogFile(logs, job_id) as log:
        start, end = window(log, ask, 1 if ask.named else jobs)
        at_end = end >= log.size
        live = at_end and not state.finished
        if live:  # the line still being written is the script's to show, as it grows
            end = start + log.read(start, end).rfind(b"\n") + 1
        lines, now = window_lines(log, start, end), logs.clock()
        blocks = fold(lines)
        # The last section is open where a failed job's last line is or new lines come.
        decide(blocks, ask.line, at_end and (live or state.failed),
               log.elapsed(now if live else None) if at_end else None)
        next_line = log.lines_before(end) + 1 if live else 0
        began = log.began
    found = await _search(request, job_id, ask.query) if ask.query else None
    times, wrap = request.query.get("times") == "1", request.query.get("wrap") == "1"
    here = f"#log-{job_id}"
    return LogView(
        job_id, shown(blocks, job_id), at_end, live, end, next_line, began, now,
        page_links(request, job_id, lines, start > 0, not at_end), times, wrap,
        times_url=address(request, here, times=None if times else "1"),
        wrap_url=address(request, here, wrap=None if wrap else "1"),
        found=found, hits=[(hit, address(request, f"#j{job_id}-L{hit.number}", job=str(job_id),
                                         line=str(hit.number), start=None, before=None))
                           for hit in (found.lines if found else [])],
        clear_url=address(request, here, q=None), query=ask.query)
