"""What the JSON API and the pages both do: find the build, job or host a path names,
approve a build, rebuild one, read a page of the queue. One place for their checks and
their error answers, so a button and an API call answer alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from ..config import RepoConfig
from ..model import Build, HostStatus, Job, utcnow
from ..planner import PlanError
from .keys import CONFIG, PLANNER, SCHEDULER, STORE
from .params import error, path_id
from .shapes import queued_json

T = TypeVar("T")

# The queue is listed to this depth (deeper jobs are counted): a page walks the pick order
# from its start, ~1 µs a position, all of it on the event loop.
QUEUE_PAGE, QUEUE_PAGE_MAX, QUEUE_MAX_OFFSET = 100, 1000, 10_000


async def load_build(request: web.Request) -> Build:
    return await _load(request, "build", request.app[STORE].get_build)


async def load_job(request: web.Request) -> Job:
    return await _load(request, "job", request.app[STORE].get_job)


async def _load(request: web.Request, what: str, get: Callable[[int], Awaitable[T | None]]
                ) -> T:
    """The build or job the path's `{id}` names, or a 404 that says which."""
    found_id = path_id(request, "id")
    if (found := await get(found_id)) is None:
        raise error(web.HTTPNotFound, f"no {what} {found_id}")
    return found


def load_repo(request: web.Request) -> RepoConfig:
    name = request.match_info["repo"]
    repo = request.app[CONFIG].repo(name)
    if repo is None:
        raise error(web.HTTPNotFound, f"no repo {name!r}")
    return repo


def load_host(request: web.Request) -> HostStatus:
    name = request.match_info["name"]
    found = [h for h in request.app[SCHEDULER].host_statuses() if h.name == name]
    if not found:
        raise error(web.HTTPNotFound, f"no host {name!r}")
    return found[0]


async def approve_build(request: web.Request) -> Build:
    """SPEC §5a: a fork's jobs waiting for a person may run; approving twice is no error,
    approving a build that never waited is."""
    build = await load_build(request)
    if not await request.app[SCHEDULER].approve_build(build.id) and build.approval is None:
        raise error(web.HTTPConflict, f"build {build.id} does not wait for approval")
    return await load_build(request)


async def rebuild_build(request: web.Request, failed: bool, names: list[str] | None
                        ) -> Build:
    """A new manual build of the build in the path: all its jobs, its failed ones (409
    when none failed), or the ones named (422 for a name it does not have)."""
    build = await load_build(request)
    jobs: set[str] | None = None
    if failed and names is not None:
        raise error(web.HTTPBadRequest, "ask for failed jobs or for named jobs, not both")
    if failed:
        jobs = {j.name for j in build.jobs if j.state.unsuccessful}
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


async def waiting_jobs(request: web.Request, limit: int, offset: int = 0
                       ) -> list[dict[str, Any]]:
    """Queued jobs in pick order with their position, wait reason and wait so far."""
    scheduler = request.app[SCHEDULER]
    waiting = scheduler.waiting(offset, limit)
    active = {a.job.id: a for a in
              await request.app[STORE].active_jobs([w.job.job_id for w in waiting])}
    now = utcnow()
    return [queued_json(found.build, found.job, scheduler, w.position, w.reason, now)
            for w in waiting if (found := active.get(w.job.job_id)) is not None]
