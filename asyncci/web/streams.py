"""A job's log as it grows, for readers that follow it: the plain text from an offset,
Server-Sent Events (SPEC §7), and the build page's feed of its running logs. A reader may
leave at any moment; that is no error.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from typing import Any

from aiohttp import web

from ..model import Job
from .actions import load_job
from .keys import LOGS, SCHEDULER, STORE
from .logview import LogFile
from .params import count, error, parse_count, query_count
from .shapes import job_json

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
SSE_KEEPALIVE_S = 15.0
FEED_CHUNK = 1 << 18  # bytes of one job's log in one answer of the feed
FEED_TOTAL = 1 << 20  # and of all jobs': a page that fell behind catches up in a few
FEED_BEHIND = 4 << 20  # a reader this far behind skips to the last FEED_CHUNK
FEED_WAIT_S = 10.0
FEED_JOBS = 100


@contextmanager
def reader_may_leave(what: str) -> Iterator[None]:
    """A browser closing a live log or a download mid-way is no error: the next write
    raises a ConnectionError (aiohttp's ClientConnectionResetError on a closed transport,
    a plain one while it waits to drain), and the answer just ends, with one debug line
    rather than a traceback."""
    try:
        yield
    except ConnectionError:
        log.debug("%s: the reader went away", what)


async def send(request: web.Request, response: web.StreamResponse, chunks: Iterable[bytes],
               what: str) -> web.StreamResponse:
    """Answer with `chunks`, each written as it comes: a log or a file however long."""
    with reader_may_leave(what):
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
    return response


def utf8_boundary(data: bytes) -> int:
    """Where the last complete UTF-8 character of `data` ends, so no event splits one."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # a lead byte: complete if its sequence fits
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)


@routes.get("/api/jobs/{id}/log")
async def job_log(request: web.Request) -> web.StreamResponse:
    """The log from `offset` to its end, however long: streamed from one open file a chunk
    at a time. `X-Log-Offset` is where to ask from next; `X-Log-Complete: 1` says the job
    had ended before its size was read, so there is no more."""
    job = await load_job(request)
    offset = query_count(request, "offset", 0) or 0
    logs = request.app[LOGS]
    end = max(offset, logs.size(job.id))
    response = web.StreamResponse(headers={"X-Log-Offset": str(end)})
    if job.state.finished:
        response.headers["X-Log-Complete"] = "1"
    response.content_type, response.charset = "text/plain", "utf-8"
    if job.state.finished:  # a running job's log may shrink meanwhile (a middle cut)
        response.content_length = end - offset
    if request.method == "HEAD":  # the headers alone: aiohttp sends what is written
        await response.prepare(request)
        return response
    with closing(logs.chunks(job.id, offset, end)) as pieces:
        return await send(request, response, pieces, f"log of job {job.id}")


# -- Server-Sent Events ------------------------------------------------------------------

@routes.get("/api/jobs/{id}/log/stream")
async def job_log_stream(request: web.Request) -> web.StreamResponse:
    """SSE: `log` events whose id is the byte offset after them, then one `state` event."""
    job = await load_job(request)
    offset = count("offset", request.headers.get("Last-Event-ID") or request.query.get("offset"),
                   0) or 0
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    })
    await response.prepare(request)
    with reader_may_leave(f"log stream of job {job.id}"):
        await _stream(request, response, job, offset)
    return response


async def _stream(request: web.Request, response: web.StreamResponse, job: Job,
                  offset: int) -> None:
    logs, store = request.app[LOGS], request.app[STORE]
    while True:
        data = logs.read(job.id, offset)
        if data:
            data = data[: utf8_boundary(data)] or data
            offset += len(data)
            await response.write(sse_event("log", data.decode(errors="replace"), offset))
            continue
        current = await store.get_job(job.id)
        if current is not None and current.state.finished and offset >= logs.size(job.id):
            build = await store.get_build(job.build_id)
            assert build is not None
            state = json.dumps(job_json(build, current, request.app[SCHEDULER]))
            await response.write(sse_event("state", state, None))
            break
        if not await _wait(logs, job.id, offset):
            await response.write(b": keepalive\n\n")


async def _wait(logs: Any, job_id: int, offset: int) -> bool:
    await logs.wait(job_id, offset, SSE_KEEPALIVE_S)
    return bool(logs.size(job_id) > offset or logs.is_closed(job_id))


def sse_event(event: str, text: str, event_id: int | None) -> bytes:
    """One event. SSE ends a line at `\r\n`, `\r` or `\n`, so each line of `text` is a
    `data:` line of its own and the client joins them with `\n`."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return (head + "".join(f"data: {line}\n" for line in lines) + "\n").encode()


# -- the build page's feed ---------------------------------------------------------------

@routes.get("/api/logs")
async def feed(request: web.Request) -> web.Response:
    """What a build page's running logs gained: `?jobs=ID:OFFSET,…` answers, for each,
    the text after OFFSET (`text`, up to `offset`), and `done` once the job ended and all
    of it was sent. Answers at once if any has news, else when one does, or after
    FEED_WAIT_S. One request for all of a page's jobs: a browser holds only six
    connections to a server, a 20-job matrix would hold them all. JSON keeps the `\\r` of
    progress bars, which Server-Sent Events turn into line ends."""
    wanted = _wanted(request.query.get("jobs", ""))
    answer = await _news(request, wanted)
    if not any(a["text"] or a["done"] for a in answer.values()):
        logs = request.app[LOGS]
        waits = [asyncio.ensure_future(logs.wait(job, offset, FEED_WAIT_S))
                 for job, offset in wanted.items()]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            waiting.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        answer = await _news(request, wanted)
    return web.json_response({"jobs": answer})


def _wanted(raw: str) -> dict[int, int]:
    wanted = {}
    for item in raw.split(",") if raw else []:
        job, _, offset = (parse_count(part) for part in item.partition(":"))
        if job is None or offset is None:
            raise error(web.HTTPBadRequest, f"jobs must be ID:OFFSET,…, got {item[:40]!r}")
        wanted[job] = offset
    if not 0 < len(wanted) <= FEED_JOBS:
        raise error(web.HTTPBadRequest, f"jobs must name 1 to {FEED_JOBS} jobs")
    return wanted


async def _news(request: web.Request, wanted: dict[int, int]) -> dict[str, dict[str, Any]]:
    logs = request.app[LOGS]
    # Before the sizes: a finished job's size is final.
    states = await request.app[STORE].job_states(wanted)
    answer, budget = {}, FEED_TOTAL
    for job_id, offset in wanted.items():
        if (state := states.get(job_id)) is None:
            raise error(web.HTTPNotFound, f"no job {job_id}")
        news: dict[str, Any] = {}
        size = logs.size(job_id)
        # Too far behind to catch up, or the log was cut in the middle since: skip ahead.
        if offset > size or size - offset > FEED_BEHIND:
            offset, news["skipped_to_line"] = _skip(LogFile(logs, job_id))
        data = logs.read(job_id, offset, min(FEED_CHUNK, budget)) if budget else b""
        data = data[:utf8_boundary(data)] or data
        budget -= len(data)
        news.update(text=data.decode(errors="replace"), offset=offset + len(data),
                    done=state.finished and offset + len(data) >= size)
        answer[str(job_id)] = news
    return answer


def _skip(file: LogFile) -> tuple[int, int]:
    """Where the last FEED_CHUNK of the log begins, at a line, and that line's number."""
    with file:
        offset = max(0, file.size - FEED_CHUNK)
        offset += file.read(offset, file.size).find(b"\n") + 1 if offset else 0
        return offset, file.lines_before(offset) + 1
