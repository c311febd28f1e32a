"""The JSON API of SPEC §7: builds, jobs, logs, the queue and hosts.

Handlers ask the store, the log files and the scheduler; they never run git or SSH.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from aiohttp import web

from ..model import (Build, Confinement, Event, Job, JobState, TestOutcome, TestReport,
                     TestResult, iso, redact_url, utcnow)
from ..planner import PlanError
from .auth import require_token
from .keys import ARTIFACTS, CONFIG, LOGS, PLANNER, SCHEDULER, STORE

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
SSE_KEEPALIVE_S = 15.0
# The queue is listed to this depth (deeper jobs are counted): a page walks the pick order
# from its start, ~1 µs a position, all of it on the event loop.
QUEUE_PAGE, QUEUE_PAGE_MAX, QUEUE_MAX_OFFSET = 100, 1000, 10_000
MAX_OFFSET = 2**62  # byte offsets and ids: far beyond any log, within SQLite's integers
# What git takes as a ref (git-check-ref-format), and a bound that keeps its command line
# short: a control or special character, `..`, `@{`, `//`, a part starting with `.` or
# ending in `.lock`, a start with `-` (an option), `/` or `.`, an end with `/` or `.`.
MAX_REF_BYTES = 1000
BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(/|\Z)|\A[-/.]|[/.]\Z")
SHA_SHAPE = re.compile(r"[0-9a-f]{4,64}")  # the planner says whether it names a commit
# Artifacts shown in the browser rather than downloaded: plain text only, never HTML.
ARTIFACT_CHUNK = 1 << 18
TEXT_SUFFIXES = {".txt", ".log", ".xml", ".json", ".csv", ".md", ".out"}


def error(status: type[web.HTTPError], message: str) -> web.HTTPError:
    return status(text=json.dumps({"error": message}), content_type="application/json")


def shown(text: str | None) -> str | None:
    """A message that may quote git's, with any credential in a URL hidden."""
    return text and redact_url(text)


def job_json(request: web.Request, build: Build, job: Job) -> dict[str, Any]:
    shell = None
    if job.state in (JobState.FAILED, JobState.ERRORED):
        shell = request.app[SCHEDULER].shell_command(build, job)
    confinement = Confinement.of(job.spec, build.untrusted)
    return {
        "id": job.id, "build_id": job.build_id, "name": job.name, "state": job.state,
        "host": job.host, "slot": job.slot, "attempt": job.attempt,
        "exit_code": job.exit_code, "reason": shown(job.reason),
        "queued_at": iso(job.queued_at), "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at), "labels": list(job.spec.labels),
        "shell": shell, "confined": confinement, "image": job.spec.image or None,
        "note": request.app[SCHEDULER].note(job.id) if job.state is JobState.RUNNING else None,
        "network": job.spec.network if confinement else True,
        "attempts": [
            {"number": a.number, "host": a.host, "slot": a.slot, "started_at": iso(a.started_at),
             "finished_at": iso(a.finished_at), "outcome": a.outcome, "reason": shown(a.reason)}
            for a in job.attempts
        ],
    }


def build_json(request: web.Request, build: Build) -> dict[str, Any]:
    public_url = request.app[CONFIG].server.public_url.rstrip("/")
    return {
        "id": build.id, "repo": build.repo, "ref": build.ref, "branch": build.branch,
        "sha": build.sha, "event": build.event, "pr": build.pr, "message": build.message,
        "author": build.author, "state": build.state, "error": shown(build.error),
        "untrusted": build.untrusted, "fork": build.fork, "approval": build.approval,
        "created_at": iso(build.created_at), "started_at": iso(build.started_at),
        "finished_at": iso(build.finished_at), "url": f"{public_url}/builds/{build.id}",
        "rebuild_of": build.rebuild_of,
        "jobs": [job_json(request, build, job) for job in build.jobs],
    }


def parse_count(raw: str, hi: int = MAX_OFFSET) -> int | None:
    """`raw` as a decimal from 0 to `hi`, or None. int() alone takes `-5`, ` 7 ` and `1_0`,
    and raises on `²` (a digit to str.isdigit) and on 5000 digits."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(hi)):
        return None
    value = int(raw)
    return value if value <= hi else None


def _count(name: str, raw: str | None, default: int | None, lo: int = 0,
           hi: int = MAX_OFFSET) -> int | None:
    if raw is None or raw == "":
        return default
    value = parse_count(raw, hi)
    if value is None or value < lo:
        raise error(web.HTTPBadRequest,
                    f"{name} must be an integer from {lo} to {hi}, got {raw[:40]!r}")
    return value


def _int(request: web.Request, name: str, default: int | None, lo: int = 0,
         hi: int = MAX_OFFSET) -> int | None:
    return _count(name, request.query.get(name), default, lo, hi)


async def load_build(request: web.Request) -> Build:
    build_id = _int_path(request, "id")
    build = await request.app[STORE].get_build(build_id)
    if build is None:
        raise error(web.HTTPNotFound, f"no build {build_id}")
    return build


async def _job(request: web.Request) -> Job:
    job_id = _int_path(request, "id")
    job = await request.app[STORE].get_job(job_id)
    if job is None:
        raise error(web.HTTPNotFound, f"no job {job_id}")
    return job


def _int_path(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    value = parse_count(raw)
    if value is None:
        raise error(web.HTTPNotFound, f"no such id {raw[:40]!r}")
    return value


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, LookupError, RecursionError):  # LookupError: an unknown charset
        raise error(web.HTTPBadRequest, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise error(web.HTTPBadRequest, "the body must be a JSON object")
    return body


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@routes.get("/api/builds")
async def list_builds(request: web.Request) -> web.Response:
    state = request.query.get("state") or None
    if state is not None and state not in set(JobState):
        raise error(web.HTTPBadRequest, f"unknown state {state!r}")
    event = request.query.get("event") or None
    if event is not None and event not in set(Event):
        raise error(web.HTTPBadRequest, f"unknown event {event[:40]!r}")
    ref = request.query.get("ref") or None
    if ref is not None and not ref.startswith("refs/"):
        ref = f"refs/heads/{ref}"
    builds = await request.app[STORE].list_builds(
        repo=request.query.get("repo") or None, state=state, ref=ref, event=event,
        limit=_int(request, "limit", 50, 1, 500) or 50,
        before=_int(request, "before", None),
    )
    return web.json_response({"builds": [build_json(request, b) for b in builds]})


@routes.get("/api/builds/{id}")
async def get_build(request: web.Request) -> web.Response:
    return web.json_response(build_json(request, await load_build(request)))


@routes.post("/api/builds/{id}/cancel")
async def cancel_build(request: web.Request) -> web.Response:
    require_token(request)
    build = await load_build(request)
    await request.app[SCHEDULER].cancel_build(build.id)
    return web.json_response(build_json(request, await load_build(request)))


@routes.post("/api/builds/{id}/approve")
async def approve(request: web.Request) -> web.Response:
    require_token(request)
    build = await approve_build(request)
    return web.json_response(build_json(request, build))


async def approve_build(request: web.Request) -> Build:
    """SPEC §5a: a fork's jobs waiting for a person may run; approving twice is no error,
    approving a build that never waited is."""
    build = await load_build(request)
    if not await request.app[SCHEDULER].approve_build(build.id) and build.approval is None:
        raise error(web.HTTPConflict, f"build {build.id} does not wait for approval")
    return await load_build(request)


@routes.post("/api/builds/{id}/rebuild")
async def rebuild(request: web.Request) -> web.Response:
    """The whole build again, or (body `{"failed": true}`) its failed, errored and
    cancelled jobs, or (body `{"jobs": [names]}`) the jobs named."""
    require_token(request)
    body = await _json_body(request) if request.body_exists else {}
    failed, names = body.get("failed", False), body.get("jobs")
    if not isinstance(failed, bool):
        raise error(web.HTTPBadRequest, "failed must be true or false")
    if names is not None and (not isinstance(names, list)
                              or not all(isinstance(n, str) for n in names)):
        raise error(web.HTTPBadRequest, "jobs must be a list of job names")
    build = await rebuild_build(request, failed, names)
    return web.json_response(build_json(request, build), status=201)


# What "rebuild failed jobs" runs again: every way a job can end short of passing.
FAILED_STATES = (JobState.FAILED, JobState.ERRORED, JobState.CANCELLED)


async def rebuild_build(request: web.Request, failed: bool, names: list[str] | None
                        ) -> Build:
    """A new manual build of the build in the path: all its jobs, its failed ones (409
    when none failed), or the ones named (422 for a name it does not have)."""
    build = await load_build(request)
    jobs: set[str] | None = None
    if failed and names is not None:
        raise error(web.HTTPBadRequest, "ask for failed jobs or for named jobs, not both")
    if failed:
        jobs = {j.name for j in build.jobs if j.state in FAILED_STATES}
        if not jobs:
            raise error(web.HTTPConflict, f"build {build.id} has no failed, errored or"
                                          " cancelled job to rebuild")
    elif names is not None:
        jobs = set(names)
        if not jobs:
            raise error(web.HTTPUnprocessableEntity, "jobs must name at least one job")
        if unknown := sorted(jobs - {j.name for j in build.jobs}):
            raise error(web.HTTPUnprocessableEntity,
                        f"build {build.id} has no job named {', '.join(map(repr, unknown))}")
    try:
        return await request.app[PLANNER].rebuild(build, jobs)
    except PlanError as e:
        raise error(web.HTTPUnprocessableEntity, str(e)) from None


@routes.post("/api/repos/{repo}/builds")
async def create_build(request: web.Request) -> web.Response:
    require_token(request)
    repo = request.app[CONFIG].repo(request.match_info["repo"])
    if repo is None:
        raise error(web.HTTPNotFound, f"no repo {request.match_info['repo']!r}")
    body = await _json_body(request)
    ref, sha = body.get("ref"), body.get("sha")
    for name, value in (("ref", ref), ("sha", sha)):
        if value is not None and (not isinstance(value, str) or not value):
            raise error(web.HTTPBadRequest, f"{name} must be a non-empty string")
    if problem := target_problem(ref, sha):
        raise error(web.HTTPUnprocessableEntity, problem)
    try:
        build = await request.app[PLANNER].manual(repo, ref, sha)
    except PlanError as e:
        raise error(web.HTTPUnprocessableEntity, str(e)) from None
    return web.json_response(build_json(request, build), status=201)


def target_problem(ref: str | None, sha: str | None) -> str | None:
    """Why a person's ref or sha cannot be what they build, checked before any git runs:
    git would refuse it anyway, but only after a fetch, or with a command line too long."""
    if ref is not None and (not ref.isprintable() or len(ref.encode()) > MAX_REF_BYTES
                            or ref == "@" or BAD_REF.search(ref)):
        return f"not a git ref name: {ref[:100]!r}"
    if sha is not None and not SHA_SHAPE.fullmatch(sha):
        return f"not a commit sha (4 to 64 hex digits): {sha[:100]!r}"
    return None


@routes.get("/api/jobs/{id}")
async def get_job(request: web.Request) -> web.Response:
    job = await _job(request)
    build = await request.app[STORE].get_build(job.build_id)
    assert build is not None
    return web.json_response(job_json(request, build, job))


@routes.get("/api/jobs/{id}/log")
async def job_log(request: web.Request) -> web.StreamResponse:
    """The log from `offset` to its end, however long: streamed from one open file a chunk
    at a time. `X-Log-Offset` is where to ask from next; `X-Log-Complete: 1` says the job
    had ended before its size was read, so there is no more."""
    job = await _job(request)
    offset = _int(request, "offset", 0) or 0
    logs = request.app[LOGS]
    end = max(offset, logs.size(job.id))
    response = web.StreamResponse(headers={"X-Log-Offset": str(end)})
    if job.state.finished:
        response.headers["X-Log-Complete"] = "1"
    response.content_type, response.charset = "text/plain", "utf-8"
    if job.state.finished:  # a running job's log may shrink meanwhile (a middle cut)
        response.content_length = end - offset
    await response.prepare(request)
    if request.method == "HEAD":  # the headers alone: aiohttp sends what is written
        return response
    chunks = closing(logs.chunks(job.id, offset, end))
    with reader_may_leave(f"log of job {job.id}"), chunks as pieces:
        for chunk in pieces:
            await response.write(chunk)
        await response.write_eof()
    return response


@routes.get("/api/jobs/{id}/artifacts")
async def artifacts(request: web.Request) -> web.Response:
    job = await _job(request)
    return web.json_response({"artifacts": await artifacts_json(request, job.id)})


async def artifacts_json(request: web.Request, job_id: int) -> list[dict[str, Any]]:
    return [{"path": a.path, "size": a.size, "url": f"/api/jobs/{job_id}/artifacts/{quote(a.path)}"}
            for a in await request.app[STORE].artifacts(job_id)]


@routes.get("/api/jobs/{id}/artifacts/{path:.+}")
async def artifact(request: web.Request) -> web.StreamResponse:
    """Only a path the store lists is served: the name is never joined to a directory
    unchecked. Served as a download in a sandbox, so an HTML artifact runs no script here.
    Streamed by hand: aiohttp's FileResponse would send a sibling `X.gz` in place of `X`."""
    job = await _job(request)
    path = request.match_info["path"]
    if path not in {a.path for a in await request.app[STORE].artifacts(job.id)}:
        raise error(web.HTTPNotFound, f"job {job.id} has no artifact {path!r}")
    try:
        file = request.app[ARTIFACTS].open(job.id, path)
    except OSError:
        raise error(web.HTTPGone, f"artifact {path!r} of job {job.id} is no longer kept") from None
    with file, reader_may_leave(f"artifact {path!r} of job {job.id}"):
        text = PurePosixPath(path).suffix in TEXT_SUFFIXES
        response = web.StreamResponse(headers={
            "Content-Type": "text/plain; charset=utf-8" if text else "application/octet-stream",
            "Content-Disposition": "inline" if text else "attachment",
            "Content-Security-Policy": "sandbox",
        })
        response.content_length = os.fstat(file.fileno()).st_size
        await response.prepare(request)
        while chunk := file.read(ARTIFACT_CHUNK):
            await response.write(chunk)
        await response.write_eof()
    return response


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


@routes.get("/api/jobs/{id}/tests")
async def tests(request: web.Request) -> web.Response:
    job = await _job(request)
    report = await request.app[STORE].test_report(job.id)
    assert report is not None  # the job exists
    return web.json_response(tests_json(report))


def tests_json(report: TestReport) -> dict[str, Any]:
    """SPEC §7; every test is an object {name, outcome, message}, so a new or still
    failing test comes with its message."""
    failing = {t.name: t for t in report.failures}
    return {
        "totals": report.totals,
        "failures": [_test_json(t) for t in report.failures],
        "new": [_test_json(failing[n]) for n in report.new],
        "fixed": [_test_json(TestResult(n, TestOutcome.PASSED)) for n in report.fixed],
        "still_failing": [_test_json(failing[n]) for n in report.still_failing],
        "base_ref": report.base_ref,
        "base_build": report.base_build,
        "summary": report.summary(),
    }


def _test_json(test: TestResult) -> dict[str, str]:
    return {"name": test.name, "outcome": test.outcome, "message": test.message}


@routes.get("/api/jobs/{id}/log/stream")
async def job_log_stream(request: web.Request) -> web.StreamResponse:
    """SSE: `log` events whose id is the byte offset after them, then one `state` event."""
    job = await _job(request)
    offset = _count("offset", request.headers.get("Last-Event-ID") or request.query.get("offset"),
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
            await response.write(_sse("log", data.decode(errors="replace"), offset))
            continue
        current = await store.get_job(job.id)
        if current is not None and current.state.finished and offset >= logs.size(job.id):
            build = await store.get_build(job.build_id)
            assert build is not None
            state = json.dumps(job_json(request, build, current))
            await response.write(_sse("state", state, None))
            break
        if not await _wait(logs, job.id, offset):
            await response.write(b": keepalive\n\n")


async def _wait(logs: Any, job_id: int, offset: int) -> bool:
    await logs.wait(job_id, offset, SSE_KEEPALIVE_S)
    return bool(logs.size(job_id) > offset or logs.is_closed(job_id))


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


def _sse(event: str, text: str, event_id: int | None) -> bytes:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return (head + "".join(f"data: {line}\n" for line in lines) + "\n").encode()


@routes.get("/api/queue")
async def queue(request: web.Request) -> web.Response:
    """A page of the queue (`offset`, `limit`): the first positions cost little however
    long the queue is, the whole of a long one a lot."""
    offset = _int(request, "offset", 0, 0, QUEUE_MAX_OFFSET) or 0
    limit = _int(request, "limit", QUEUE_PAGE, 1, QUEUE_PAGE_MAX) or QUEUE_PAGE
    return web.json_response({"jobs": await queue_json(request, limit, offset),
                              "total": len(request.app[SCHEDULER].queue),
                              "offset": offset, "limit": limit})


async def queue_json(request: web.Request, limit: int, offset: int = 0
                     ) -> list[dict[str, Any]]:
    """Queued jobs in pick order with their position, wait reason and wait so far."""
    waiting = request.app[SCHEDULER].waiting(offset, limit)
    active = {a.job.id: a for a in
              await request.app[STORE].active_jobs([w.job.job_id for w in waiting])}
    now = utcnow()
    jobs = []
    for w in waiting:
        found = active.get(w.job.job_id)
        if found is None:
            continue
        queued_at = found.job.queued_at or now
        jobs.append({
            **job_json(request, found.build, found.job),
            "repo": found.build.repo, "ref": found.build.ref, "sha": found.build.sha,
            "event": found.build.event, "position": w.position, "reason": w.reason,
            "waited_s": round((now - queued_at).total_seconds(), 3),
        })
    return jobs


def host_json(request: web.Request, name: str) -> dict[str, Any]:
    scheduler = request.app[SCHEDULER]
    host = scheduler.hosts.get(name)
    if host is None:
        raise error(web.HTTPNotFound, f"no host {name!r}")
    return {
        "name": host.name, "state": scheduler.host_state(host), "slots": host.slots,
        "busy": scheduler.busy(host), "labels": sorted(host.labels),
        "last_error": host.last_error, "latency_ms": host.latency_ms,
        "confines": host.abilities,
    }


@routes.get("/api/hosts")
async def hosts(request: web.Request) -> web.Response:
    names = request.app[SCHEDULER].hosts
    return web.json_response({"hosts": [host_json(request, n) for n in names]})


@routes.post("/api/hosts/{name}/drain")
async def drain(request: web.Request) -> web.Response:
    return await _set_drained(request, True)


@routes.post("/api/hosts/{name}/resume")
async def resume(request: web.Request) -> web.Response:
    return await _set_drained(request, False)


async def _set_drained(request: web.Request, drained: bool) -> web.Response:
    require_token(request)
    name = request.match_info["name"]
    host_json(request, name)  # 404 before changing anything
    await request.app[SCHEDULER].drain(name, drained)
    return web.json_response(host_json(request, name))


def repo_json(request: web.Request, name: str, status: Any) -> dict[str, Any]:
    repo = request.app[CONFIG].repo(name)
    assert repo is not None
    return {
        "name": repo.name, "branches": list(repo.branches), "github": repo.github,
        "poll": repo.poll, "poll_error": shown(status.poll_error),
        "polled_at": iso(status.polled_at),
    }


@routes.get("/api/repos")
async def repos(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return web.json_response({"repos": [
        repo_json(request, r.name, await store.repo_status(r.name))
        for r in request.app[CONFIG].repos
    ]})


@routes.get("/api/repos/{repo}")
async def repo(request: web.Request) -> web.Response:
    name = request.match_info["repo"]
    if request.app[CONFIG].repo(name) is None:
        raise error(web.HTTPNotFound, f"no repo {name!r}")
    status = await request.app[STORE].repo_status(name)
    return web.json_response(repo_json(request, name, status))
