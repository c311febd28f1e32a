"""The aiohttp application: routes, the read-access rule and JSON errors for the API."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..config import Config
from ..logs import Logs
from ..logs.artifacts import Artifacts
from ..planner import Planner
from ..scheduler import Scheduler
from ..store import Store
from . import api, hooks, metrics, pages, streams
from .auth import check_bearer, load_sessions, may_read
from .keys import (ARTIFACTS, BACKGROUND, CONFIG, LOGS, PLANNER, POKE, SCHEDULER, SEARCHES,
                   SESSIONS, STORE, THROTTLE, WEBHOOK_READS)
from .throttle import Throttle

# GitHub's own cap on webhook deliveries (SPEC §6); larger bodies are answered 413.
MAX_BODY = 25 * 1024 * 1024
MAX_FORM = 64 * 1024
# A connection idle this long is closed. aiohttp (3.14.5 here) starts this clock when a
# connection opens and when an answer is sent, and only its arrival stops it, so it is
# also the deadline for a request's headers: a client that trickles them is cut off.
IDLE_TIMEOUT_S = 60.0
ALWAYS_OPEN = ("/healthz", "/hooks/", "/login", "/static/")
SECURITY_HEADERS = {
    # No inline script anywhere: pages load their JavaScript from /static only.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self';"
                               " img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With `web.public = false` only the token opens anything but the always-open paths.
    A body declared too big is refused before a byte of it is read; a page's form (a login,
    a button), which anyone may post, is small."""
    limit = MAX_BODY if request.path.startswith(("/api/", "/hooks/")) else MAX_FORM
    if (request.content_length or 0) > limit:
        raise web.HTTPRequestEntityTooLarge(
            limit, text=json.dumps({"error": f"the body is over {limit} bytes"}),
            content_type="application/json")
    if limit != MAX_BODY:  # a body sent without its length is cut off there too
        request = request.clone(client_max_size=limit)
    check_bearer(request)
    if not request.path.startswith(ALWAYS_OPEN) and not may_read(request):
        if request.method == "GET" and not request.path.startswith(("/api/", "/metrics")):
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs)}")
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "this server is private: a token is required"}),
            content_type="application/json", headers={"WWW-Authenticate": "Bearer"},
        )
    return await handler(request)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


async def _cancel_background(app: web.Application) -> None:
    for task in app[BACKGROUND]:
        task.cancel()
    await asyncio.gather(*app[BACKGROUND], return_exceptions=True)


def create_app(
    config: Config, store: Store, scheduler: Scheduler, planner: Planner, logs: Logs,
    artifacts: Artifacts, poke: Callable[[str], None],
) -> web.Application:
    app = web.Application(middlewares=[guard, pages.html_errors], client_max_size=MAX_BODY,
                          handler_args={"keepalive_timeout": IDLE_TIMEOUT_S})
    app[CONFIG] = config
    app[STORE] = store
    app[SCHEDULER] = scheduler
    app[PLANNER] = planner
    app[LOGS] = logs
    app[ARTIFACTS] = artifacts
    app[POKE] = poke
    app[BACKGROUND] = set()
    app[SESSIONS] = {}
    app[THROTTLE] = Throttle()
    app[WEBHOOK_READS] = asyncio.Semaphore(2)
    app[SEARCHES] = asyncio.Semaphore(2)
    app.on_startup.append(load_sessions)
    app.on_cleanup.append(_cancel_background)
    app.add_routes(api.routes)
    app.add_routes(hooks.routes)
    app.add_routes(metrics.routes)
    app.on_response_prepare.append(_security_headers)
    app.add_routes(streams.routes)
    app.add_routes(pages.routes)
    app.router.add_static("/static", pages.resource_dir("static"))
    return app
