"""Server-rendered HTML pages (jinja2, autoescaped): the dashboard and a build's page.

Every page works without JavaScript; pages only read from the store, the scheduler and
the log files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from .api import build_json, host_json, load_build
from .keys import LOGS, SCHEDULER, STORE

routes = web.RouteTableDef()
LOG_TAIL = 256 * 1024  # a page shows the end of a big log; the raw log has the rest


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


def render(name: str, **context: Any) -> web.Response:
    html = TEMPLATES.get_template(name).render(**context)
    return web.Response(text=html, content_type="text/html")


@routes.get("/")
async def dashboard(request: web.Request) -> web.Response:
    scheduler, store = request.app[SCHEDULER], request.app[STORE]
    builds = [build_json(request, b) for b in await store.list_builds(limit=30)]
    running = [(b, j) for b in [build_json(request, b) for b in
                                await store.list_builds(state="running", limit=100)]
               for j in b["jobs"] if j["state"] == "running"]
    waiting = scheduler.waiting()[:50]
    hosts = [host_json(request, name) for name in scheduler.hosts]
    return render("index.html", builds=builds, running=running, waiting=waiting, hosts=hosts)


@routes.get("/builds/{id}")
async def build_page(request: web.Request) -> web.Response:
    build = build_json(request, await load_build(request))
    logs = request.app[LOGS]
    for job in build["jobs"]:
        size = logs.size(job["id"])
        job["log"] = logs.read(job["id"], max(0, size - LOG_TAIL), LOG_TAIL).decode(errors="replace")
        job["log_cut"] = size > LOG_TAIL
    return render("build.html", build=build)
