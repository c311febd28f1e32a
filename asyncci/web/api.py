"""The JSON API of SPEC §7: builds, jobs, the queue, hosts and repos.

Handlers ask the store and the scheduler; they never run git or SSH. What they answer is
shaped in shapes.py; a job's log is served by streams.py.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import PurePosixPath

from aiohttp import web

from ..model import Build, Event, JobState
from ..planner import PlanError
from ..refs import full_ref
from .actions import (QUEUE_MAX_OFFSET, QUEUE_PAGE, QUEUE_PAGE_MAX, approve_build, load_build,
                      load_host, load_job, load_repo, rebuild_build, waiting_jobs)
from .auth import require_token
from .keys import ARTIFACTS, CONFIG, PLANNER, SCHEDULER, STORE
from .params import error, json_body, query_count, target_problem
from .shapes import artifacts_json, build_json, host_json, job_json, repo_json, tests_json
from .streams import send

routes = web.RouteTableDef()
# Artifacts shown in the browser rather than downloaded: plain text only, never HTML.
ARTIFACT_CHUNK = 1 << 18
TEXT_SUFFIXES = {".txt", ".log", ".xml", ".json", ".csv", ".md", ".out"}


def _answer(request: web.Request, build: Build, status: int = 200) -> web.Response:
    """A build as the API answers it."""
    url = request.app[CONFIG].server.public_url
    return web.json_response(build_json(build, request.app[SCHEDULER], url), status=status)


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
    ref = full_ref(ref) if ref is not None else None
    builds = await request.app[STORE].list_builds(
        repo=request.query.get("repo") or None, state=state, ref=ref, event=event,
        limit=query_count(request, "limit", 50, 1, 500) or 50,
        before=query_count(request, "before", None),
    )
    scheduler, url = request.app[SCHEDULER], request.app[CONFIG].server.public_url
    return web.json_response({"builds": [build_json(b, scheduler, url) for b in builds]})


@routes.get("/api/builds/{id}")
async def get_build(request: web.Request) -> web.Response:
    return _answer(request, await load_build(request))


@routes.post("/api/builds/{id}/cancel")
async def cancel_build(request: web.Request) -> web.Response:
    require_token(request)
    build = await load_build(request)
    await request.app[SCHEDULER].cancel_build(build.id)
    return _answer(request, await load_build(request))


@routes.post("/api/builds/{id}/approve")
async def approve(request: web.Request) -> web.Response:
    require_token(request)
    return _answer(request, await approve_build(request))


@routes.post("/api/builds/{id}/rebuild")
async def rebuild(request: web.Request) -> web.Response:
    """The whole build again, or (body `{"failed": true}`) its failed, errored and
    cancelled jobs, or (body `{"jobs": [names]}`) the jobs named."""
    require_token(request)
    body = await json_body(request) if request.body_exists else {}
    failed, names = body.get("failed", False), body.get("jobs")
    if not isinstance(failed, bool):
        raise error(web.HTTPBadRequest, "failed must be true or false")
    if names is not None and (not isinstance(names, list)
                              or not all(isinstance(n, str) for n in names)):
        raise error(web.HTTPBadRequest, "jobs must be a list of job names")
    return _answer(request, await rebuild_build(request, failed, names), 201)


@routes.post("/api/repos/{repo}/builds")
async def create_build(request: web.Request) -> web.Response:
    require_token(request)
    repo = load_repo(request)
    body = await json_body(request)
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
    return _answer(request, build, 201)


@routes.get("/api/jobs/{id}")
async def get_job(request: web.Request) -> web.Response:
    job = await load_job(request)
    build = await request.app[STORE].get_build(job.build_id)
    assert build is not None
    return web.json_response(job_json(build, job, request.app[SCHEDULER]))


@routes.get("/api/jobs/{id}/artifacts")
async def artifacts(request: web.Request) -> web.Response:
    job = await load_job(request)
    kept = await request.app[STORE].artifacts(job.id)
    return web.json_response({"artifacts": artifacts_json(job.id, kept)})


@routes.get("/api/jobs/{id}/artifacts/{path:.+}")
async def artifact(request: web.Request) -> web.StreamResponse:
    """Only a path the store lists is served: the name is never joined to a directory
    unchecked. Served as a download in a sandbox, so an HTML artifact runs no script here.
    Streamed by hand: aiohttp's FileResponse would send a sibling `X.gz` in place of `X`."""
    job = await load_job(request)
    path = request.match_info["path"]
    if path not in {a.path for a in await request.app[STORE].artifacts(job.id)}:
        raise error(web.HTTPNotFound, f"job {job.id} has no artifact {path!r}")
    try:
        file = request.app[ARTIFACTS].open(job.id, path)
    except OSError:
        raise error(web.HTTPGone, f"artifact {path!r} of job {job.id} is no longer kept") from None
    with file:
        text = PurePosixPath(path).suffix in TEXT_SUFFIXES
        response = web.StreamResponse(headers={
            "Content-Type": "text/plain; charset=utf-8" if text else "application/octet-stream",
            "Content-Disposition": "inline" if text else "attachment",
            "Content-Security-Policy": "sandbox",
        })
        response.content_length = os.fstat(file.fileno()).st_size
        return await send(request, response, iter(partial(file.read, ARTIFACT_CHUNK), b""),
                          f"artifact {path!r} of job {job.id}")


@routes.get("/api/jobs/{id}/tests")
async def tests(request: web.Request) -> web.Response:
    job = await load_job(request)
    report = await request.app[STORE].test_report(job.id)
    assert report is not None  # the job exists
    return web.json_response(tests_json(report))


@routes.get("/api/queue")
async def queue(request: web.Request) -> web.Response:
    """A page of the queue (`offset`, `limit`): the first positions cost little however
    long the queue is, the whole of a long one a lot."""
    offset = query_count(request, "offset", 0, 0, QUEUE_MAX_OFFSET) or 0
    limit = query_count(request, "limit", QUEUE_PAGE, 1, QUEUE_PAGE_MAX) or QUEUE_PAGE
    return web.json_response({"jobs": await waiting_jobs(request, limit, offset),
                              "total": len(request.app[SCHEDULER].queue),
                              "offset": offset, "limit": limit})


@routes.get("/api/hosts")
async def hosts(request: web.Request) -> web.Response:
    statuses = request.app[SCHEDULER].host_statuses()
    return web.json_response({"hosts": [host_json(h) for h in statuses]})


@routes.post("/api/hosts/{name}/drain")
async def drain(request: web.Request) -> web.Response:
    return await _set_drained(request, True)


@routes.post("/api/hosts/{name}/resume")
async def resume(request: web.Request) -> web.Response:
    return await _set_drained(request, False)


async def _set_drained(request: web.Request, drained: bool) -> web.Response:
    require_token(request)
    host = load_host(request)  # 404 before changing anything
    await request.app[SCHEDULER].drain(host.name, drained)
    return web.json_response(host_json(load_host(request)))


@routes.get("/api/repos")
async def repos(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return web.json_response({"repos": [
        repo_json(r, await store.repo_status(r.name)) for r in request.app[CONFIG].repos
    ]})


@routes.get("/api/repos/{repo}")
async def repo(request: web.Request) -> web.Response:
    found = load_repo(request)
    status = await request.app[STORE].repo_status(found.name)
    return web.json_response(repo_json(found, status))
