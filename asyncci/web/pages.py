"""Server-rendered HTML pages (jinja2, autoescaped) and the forms behind their buttons.

Every page works without JavaScript; with it, pages refresh their content in place and a
build's log follows live. Pages read from the store, the scheduler and the log files;
forms need a login session and a CSRF token, and change things only through the same
scheduler and planner calls as the API.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..config import RepoConfig
from ..model import Event, JobState, iso, redact_url
from ..planner import PlanError, Planner
from ..refs import branch_of
from .actions import (QUEUE_MAX_OFFSET, QUEUE_PAGE, approve_build, load_build, load_host,
                      load_repo, rebuild_build, waiting_jobs)
from .auth import (COOKIE, SESSION_S, attempted, check_form, csrf_token, end_session, has_session,
                   may_read, start_session, throttled, token_matches)
from .durations import ago, duration, span
from .keys import CONFIG, PLANNER, SCHEDULER, STORE
from .listing import STRIP, BuildFilter, builds_page, ref_label, strip
from .logview import log_view
from .params import error, parse_count, target_problem
from .shapes import artifacts_json, build_json, head_json, host_json, job_json, tests_json
from .summary import build_summary, word
from .testpage import tests_overview

routes = web.RouteTableDef()


def resource_dir(name: str) -> Path:
    """`templates/` and `static/` sit in the package when installed from a wheel, and at
    the top of the repository in a checkout."""
    packaged = Path(__file__).resolve().parent.parent / name
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / name


TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(resource_dir("templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
TEMPLATES.filters.update(ago=ago, redact=redact_url, word=word, span=span, ref=ref_label)
TEMPLATES.globals.update(duration=duration, states=list(JobState), events=list(Event))


def render(request: web.Request, name: str, **context: Any) -> web.Response:
    """A page; its menu names the repos only to a reader who may read them."""
    config = request.app[CONFIG]
    html = TEMPLATES.get_template(name).render(
        repos=[r.name for r in config.repos] if may_read(request) else [],
        logged_in=has_session(request),
        csrf=csrf_token(request), path=request.path_qs, **context)
    return web.Response(text=html, content_type="text/html")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def html_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A person's browser gets an error as a page in the site's layout, with the words
    the API would have put in its JSON (an unknown path too); redirects pass through, and
    the API and webhooks keep their JSON."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400 or request.path.startswith(("/api/", "/hooks/")):
            raise
        response = render(request, "error.html", status=e.status, title=e.reason,
                          message=_error_text(e))
        response.set_status(e.status)
        for name in ("Retry-After", "Allow"):
            if name in e.headers:
                response.headers[name] = e.headers[name]
        return response


def _error_text(e: web.HTTPException) -> str:
    if e.content_type == "application/json" and e.text:
        try:
            return str(json.loads(e.text).get("error", e.text))
        except (ValueError, AttributeError):
            pass
    return e.text or e.reason


async def running_jobs(request: web.Request) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """What runs now, oldest first: the scheduler's jobs alone, not whole builds (a matrix
    of 100 jobs is not read for its few running)."""
    scheduler = request.app[SCHEDULER]
    active = await request.app[STORE].active_jobs(scheduler.running())
    return [(head_json(a.build), job_json(a.build, a.job, scheduler)) for a in active
            if a.job.state is JobState.RUNNING]


@routes.get("/")
async def dashboard(request: web.Request) -> web.Response:
    scheduler = request.app[SCHEDULER]
    chosen = BuildFilter.parse(request)
    builds, pager = await builds_page(request, chosen)
    return render(
        request, "index.html",
        running=await running_jobs(request), waiting=await waiting_jobs(request, 20),
        queued=len(scheduler.queue), builds=builds, filter=chosen, pager=pager,
        hosts=[host_json(h) for h in scheduler.host_statuses()],
    )


@routes.get("/queue")
async def queue_page(request: web.Request) -> web.Response:
    """A page of the queue: its first positions cost little however long it is."""
    offset = parse_count(request.query.get("offset", ""), QUEUE_MAX_OFFSET) or 0
    waiting = await waiting_jobs(request, QUEUE_PAGE, offset)
    return render(request, "queue.html", waiting=waiting, offset=offset, page=QUEUE_PAGE,
                  queued=len(request.app[SCHEDULER].queue))


@routes.get("/hosts")
async def hosts_page(request: web.Request) -> web.Response:
    return render(request, "hosts.html",
                  hosts=[host_json(h) for h in request.app[SCHEDULER].host_statuses()])


@routes.get("/repos/{repo}")
async def repo_page(request: web.Request) -> web.Response:
    return await repo_view(request, load_repo(request))


async def repo_view(request: web.Request, repo: RepoConfig, problem: str | None = None,
                    asked: str = "") -> web.Response:
    """A repo's page; with `problem`, the build form did not take `asked`, and the page
    says why beside it (422)."""
    store, scheduler = request.app[STORE], request.app[SCHEDULER]
    chosen = BuildFilter.parse(request, repo.name)
    default = Planner.default_ref(repo)
    builds, pager = await builds_page(request, chosen)
    shown_ref = chosen.ref or default
    url = request.app[CONFIG].server.public_url
    response = render(
        request, "repo.html", repo=repo, status=await store.repo_status(repo.name),
        refs=[build_json(b, scheduler, url) for b in await _refs(request, repo.name, default)],
        default_ref=default, builds=builds, filter=chosen, pager=pager,
        strip=strip(await store.build_times(repo.name, shown_ref, STRIP)), strip_ref=shown_ref,
        badge=_badge_markdown(request, repo.name, default), problem=problem, asked=asked)
    if problem:
        response.set_status(422)
    return response


async def _refs(request: web.Request, repo: str, default: str | None) -> list[Any]:
    """Each ref's newest build, the default branch's first, then the latest built."""
    store = request.app[STORE]
    refs = await store.latest_per_ref(repo, 30)
    first = [b for b in refs if b.ref == default] or (
        await store.list_builds(repo=repo, ref=default, limit=1) if default else [])
    return first + [b for b in refs if b.ref != default]


def _badge_markdown(request: web.Request, repo: str, default: str | None) -> str:
    url = request.app[CONFIG].server.public_url.rstrip("/")
    branch = branch_of(default) if default else None
    query = f"?branch={quote(branch, safe='')}" if branch else ""
    return f"[![asyncci]({url}/badge/{repo}.svg{query})]({url}/repos/{repo})"


@routes.get("/builds/{id}")
async def build_page(request: web.Request) -> web.Response:
    loaded = await load_build(request)
    build = build_json(loaded, request.app[SCHEDULER], request.app[CONFIG].server.public_url)
    store = request.app[STORE]
    for job, spec in zip(build["jobs"], (j.spec for j in loaded.jobs)):
        done = JobState(job["state"]).finished
        kept = await store.artifacts(job["id"]) if done and spec.artifacts else []
        job["artifacts"] = artifacts_json(job["id"], kept)
        report = await store.test_report(job["id"]) if done and spec.junit else None
        job["tests"] = report and tests_json(report)
        job["log"] = await log_view(request, job, len(build["jobs"]))
    return render(request, "build.html", build=build,
                  **await build_summary(request, loaded, build))


@routes.get("/repos/{repo}/tests")
async def tests_page(request: web.Request) -> web.Response:
    """The repo's failing, new, flaky and slowest tests; with `?job=NAME&test=NAME`, one
    test's outcomes across the repo's builds of that job."""
    repo = load_repo(request)
    job, test = request.query.get("job", ""), request.query.get("test", "")
    if not job and not test:
        default = Planner.default_ref(repo)
        overview = await tests_overview(request.app[STORE], repo.name, default)
        return render(request, "test_overview.html", repo=repo.name, default_ref=default,
                      **overview)
    if not job or not test:
        raise error(web.HTTPBadRequest, "both ?job= and ?test= are required")
    runs = [{**vars(r), "finished_at": iso(r.finished_at)}
            for r in await request.app[STORE].test_history(repo.name, job, test)]
    return render(request, "tests.html", repo=repo.name, job=job, test=test, runs=runs)


# -- login and forms ------------------------------------------------------------------

@routes.get("/login")
async def login_form(request: web.Request) -> web.Response:
    return render(request, "login.html", error=None, next=_next(request.query.get("next")),
                  no_token=request.app[CONFIG].web.token is None)


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    """A client that gave too many wrong tokens is refused for a while, even the right one:
    otherwise the pause would not slow a guesser down."""
    form = await _fields(request)
    target = _next(form.get("next", "/"))
    if wait := throttled(request):
        response = render(request, "login.html", next=target,
                          error=f"Too many wrong tokens: try again in {wait} s.")
        response.set_status(429)
        response.headers["Retry-After"] = str(wait)
        return response
    if not attempted(request, token_matches(request, form.get("token", ""))):
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
    form = await _fields(request)
    check_form(request, form)
    return form


async def _fields(request: web.Request) -> dict[str, str]:
    """A posted form's fields; a body that is no form (a content type without its
    boundary, an unknown charset, broken multipart) is a 400, never a 500."""
    try:
        return {k: str(v) for k, v in (await request.post()).items()}
    except (ValueError, LookupError, HttpProcessingError) as e:
        raise web.HTTPBadRequest(text=f"not a form: {e}") from None


@routes.get("/builds/{id}/cancel")
async def cancel_confirm(request: web.Request) -> web.Response:
    """Cancel asks twice, without JavaScript: the build page's button leads here, and
    only this page's button cancels."""
    build = build_json(await load_build(request), request.app[SCHEDULER],
                       request.app[CONFIG].server.public_url)
    return render(request, "cancel.html", build=build)


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
    """The whole build again; `failed=1`: its failed jobs; `job=NAME`: that job."""
    form = await _form(request)
    names = [form["job"]] if "job" in form else None
    build = await rebuild_build(request, form.get("failed") == "1", names)
    raise web.HTTPSeeOther(f"/builds/{build.id}")


@routes.post("/repos/{repo}/trigger")
async def trigger_form(request: web.Request) -> web.Response:
    """A build of the branch asked for; a branch that cannot be built shows the repo's
    page again, the form holding what was typed and the reason beside it."""
    form = await _form(request)
    repo = load_repo(request)
    ref = form.get("ref") or None
    try:
        if problem := target_problem(ref, None):
            raise PlanError(problem)
        build = await request.app[PLANNER].manual(repo, ref, None)
    except PlanError as e:
        return await repo_view(request, repo, str(e), ref or "")
    raise web.HTTPSeeOther(f"/builds/{build.id}")


@routes.post("/hosts/{name}/{action:drain|resume}")
async def host_form(request: web.Request) -> web.Response:
    await _form(request)
    host = load_host(request)  # 404 for an unknown host
    await request.app[SCHEDULER].drain(host.name, request.match_info["action"] == "drain")
    raise web.HTTPSeeOther("/hosts")
