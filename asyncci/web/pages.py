"""Server-rendered HTML pages (jinja2, autoescaped) and the forms behind their buttons.

Every page works without JavaScript; with it, pages refresh their content in place and a
build's log follows live. Pages read from the store, the scheduler and the log files;
forms need a login session and a CSRF token, and change things only through the same
scheduler and planner calls as the API.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web
from markupsafe import Markup

from ..model import JobState, iso, redact_url, utcnow
from ..planner import PlanError
from .ansi import ansi_to_html
from .api import (QUEUE_MAX_OFFSET, QUEUE_PAGE, approve_build, artifacts_json, build_json,
                  host_json, load_build, parse_count, queue_json, target_problem, tests_json)
from .auth import (COOKIE, SESSION_S, attempted, check_form, csrf_token, end_session, has_session,
                   may_read, start_session, throttled, token_matches)
from .keys import CONFIG, LOGS, PLANNER, SCHEDULER, STORE

routes = web.RouteTableDef()
LOG_PAGE = 64 * 1024  # bytes of log a page shows at once: a 50 MB log is never one page


def resource_dir(name: str) -> Path:
    """`templates/` and `static/` sit in the package when installed from a wheel, and at
    the top of the repository in a checkout."""
    packaged = Path(__file__).resolve().parent.parent / name
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / name


def ago(value: str | None) -> str:
    if not value:
        return ""
    seconds = (utcnow() - datetime.fromisoformat(value)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{max(0, int(seconds))} s ago"


def duration(start: str | None, end: str | None) -> str:
    if not start:
        return ""
    stop = datetime.fromisoformat(end) if end else utcnow()
    seconds = int((stop - datetime.fromisoformat(start)).total_seconds())
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(resource_dir("templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
TEMPLATES.filters.update(ago=ago, ansi=lambda text: Markup(ansi_to_html(text)), redact=redact_url)
TEMPLATES.globals.update(duration=duration)


def render(request: web.Request, name: str, **context: Any) -> web.Response:
    """A page; its menu names the repos only to a reader who may read them."""
    config = request.app[CONFIG]
    html = TEMPLATES.get_template(name).render(
        repos=[r.name for r in config.repos] if may_read(request) else [],
        logged_in=has_session(request),
        csrf=csrf_token(request), path=request.path_qs, **context)
    return web.Response(text=html, content_type="text/html")


async def running_jobs(request: web.Request) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    builds = await request.app[STORE].list_builds(state="running", limit=100)
    return [(b, j) for b in (build_json(request, b) for b in builds)
            for j in b["jobs"] if j["state"] == "running"]


@routes.get("/")
async def dashboard(request: web.Request) -> web.Response:
    store, scheduler = request.app[STORE], request.app[SCHEDULER]
    return render(
        request, "index.html",
        running=await running_jobs(request), waiting=await queue_json(request, 20),
        queued=len(scheduler.queue),
        builds=[build_json(request, b) for b in await store.list_builds(limit=25)],
        hosts=[host_json(request, n) for n in scheduler.hosts],
    )


@routes.get("/queue")
async def queue_page(request: web.Request) -> web.Response:
    """A page of the queue: its first positions cost little however long it is."""
    offset = parse_count(request.query.get("offset", ""), QUEUE_MAX_OFFSET) or 0
    waiting = await queue_json(request, QUEUE_PAGE, offset)
    return render(request, "queue.html", waiting=waiting, offset=offset, page=QUEUE_PAGE,
                  queued=len(request.app[SCHEDULER].queue))


@routes.get("/hosts")
async def hosts_page(request: web.Request) -> web.Response:
    return render(request, "hosts.html",
                  hosts=[host_json(request, n) for n in request.app[SCHEDULER].hosts])


@routes.get("/repos/{repo}")
async def repo_page(request: web.Request) -> web.Response:
    name = request.match_info["repo"]
    repo = request.app[CONFIG].repo(name)
    if repo is None:
        raise web.HTTPNotFound(text=f"no repo {name!r}")
    store = request.app[STORE]
    refs = await store.latest_per_ref(name, 30)
    builds = await store.list_builds(repo=name, limit=25)
    return render(request, "repo.html", repo=repo, status=await store.repo_status(name),
                  refs=[build_json(request, b) for b in refs],
                  builds=[build_json(request, b) for b in builds])


@routes.get("/builds/{id}")
async def build_page(request: web.Request) -> web.Response:
    loaded = await load_build(request)
    build = build_json(request, loaded)
    logs, store = request.app[LOGS], request.app[STORE]
    for job, spec in zip(build["jobs"], (j.spec for j in loaded.jobs)):
        done = JobState(job["state"]).finished
        kept = done and spec.artifacts
        job["artifacts"] = await artifacts_json(request, job["id"]) if kept else []
        report = await store.test_report(job["id"]) if done and spec.junit else None
        job["tests"] = report and tests_json(report)
        size = logs.size(job["id"])
        before = parse_count(request.query.get("before", ""))
        end = size if before is None else min(before, size)
        start = max(0, end - LOG_PAGE)
        data = logs.read(job["id"], start, end - start)
        if start > 0:  # begin at a whole line
            cut = data.find(b"\n") + 1
            data, start = data[cut:], start + cut
        lines, offset = [], start
        for raw in data.splitlines(keepends=True):
            lines.append((offset, raw.decode(errors="replace").rstrip("\r\n")))
            offset += len(raw)
        job.update(log_lines=lines, log_start=start, log_end=start + len(data),
                   numbered=start == 0, live=not JobState(job["state"]).finished)
    return render(request, "build.html", build=build)


@routes.get("/repos/{repo}/tests")
async def test_history_page(request: web.Request) -> web.Response:
    """One test's outcomes across a repo's builds of one job: `?job=NAME&test=NAME`."""
    name = request.match_info["repo"]
    if request.app[CONFIG].repo(name) is None:
        raise web.HTTPNotFound(text=f"no repo {name!r}")
    job, test = request.query.get("job", ""), request.query.get("test", "")
    if not job or not test:
        raise web.HTTPBadRequest(text="both ?job= and ?test= are required")
    runs = [{**vars(r), "finished_at": iso(r.finished_at)}
            for r in await request.app[STORE].test_history(name, job, test)]
    return render(request, "tests.html", repo=name, job=job, test=test, runs=runs)


# -- login and forms ------------------------------------------------------------------

@routes.get("/login")
async def login_form(request: web.Request) -> web.Response:
    return render(request, "login.html", error=None, next=_next(request.query.get("next")))


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    """A client that gave too many wrong tokens is refused for a while, even the right one:
    otherwise the pause would not slow a guesser down."""
    form = await request.post()
    target = _next(str(form.get("next", "/")))
    if wait := throttled(request):
        response = render(request, "login.html", next=target,
                          error=f"Too many wrong tokens: try again in {wait} s.")
        response.set_status(429)
        response.headers["Retry-After"] = str(wait)
        return response
    if not attempted(request, token_matches(request, str(form.get("token", "")))):
        response = render(request, "login.html", error="That is not the token.", next=target)
        response.set_status(401)
        return response
    response = web.HTTPSeeOther(target)
    response.set_cookie(COOKIE, await start_session(request), max_age=SESSION_S, httponly=True,
                        samesite="Strict", path="/",
                        secure=request.app[CONFIG].server.public_url.startswith("https:"))
    raise response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    await _form(request)
    await end_session(request)
    response = web.HTTPSeeOther("/")
    response.del_cookie(COOKIE, path="/")
    raise response


def _next(target: str | None) -> str:
    """Only a path on this server: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    return quote(target, safe="/?=&%-._~")


async def _form(request: web.Request) -> dict[str, str]:
    form = {k: str(v) for k, v in (await request.post()).items()}
    check_form(request, form)
    return form


@routes.post("/builds/{id}/cancel")
async def cancel_form(request: web.Request) -> web.Response:
    await _form(request)
    build = await load_build(request)
    await request.app[SCHEDULER].cancel_build(build.id)
    raise web.HTTPSeeOther(f"/builds/{build.id}")


@routes.post("/builds/{id}/approve")
async def approve_form(request: web.Request) -> web.Response:
    await _form(request)
    build = await approve_build(request)
    raise web.HTTPSeeOther(f"/builds/{build.id}")


@routes.post("/builds/{id}/rebuild")
async def rebuild_form(request: web.Request) -> web.Response:
    await _form(request)
    try:
        build = await request.app[PLANNER].rebuild(await load_build(request))
    except PlanError as e:
        raise web.HTTPUnprocessableEntity(text=str(e)) from None
    raise web.HTTPSeeOther(f"/builds/{build.id}")


@routes.post("/repos/{repo}/trigger")
async def trigger_form(request: web.Request) -> web.Response:
    form = await _form(request)
    repo = request.app[CONFIG].repo(request.match_info["repo"])
    if repo is None:
        raise web.HTTPNotFound(text="no such repo")
    ref = form.get("ref") or None
    if problem := target_problem(ref, None):
        raise web.HTTPUnprocessableEntity(text=problem)
    try:
        build = await request.app[PLANNER].manual(repo, ref, None)
    except PlanError as e:
        raise web.HTTPUnprocessableEntity(text=str(e)) from None
    raise web.HTTPSeeOther(f"/builds/{build.id}")


@routes.post("/hosts/{name}/{action:drain|resume}")
async def host_form(request: web.Request) -> web.Response:
    await _form(request)
    name = request.match_info["name"]
    host_json(request, name)  # 404 for an unknown host
    await request.app[SCHEDULER].drain(name, request.match_info["action"] == "drain")
    raise web.HTTPSeeOther("/hosts")
