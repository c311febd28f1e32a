"""Webhooks: GitHub's (`push`, `pull_request`, `ping`) and the plain poke.

A delivery is checked (signature, headers, JSON), answered at once and acted on after, so
a slow git fetch never makes GitHub time out. What a payload asks for is worked out by
plain functions; every build goes through the planner, whose trigger keys make a
redelivery, or a webhook racing the poller, one build.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from gidgethub import ValidationFailure
from gidgethub.sansio import validate_event

from ..config import RepoConfig
from ..model import Event
from ..planner import PlanError
from ..refs import Commit, branch_matches, branch_of, branch_ref, pull_ref
from .actions import load_repo
from .auth import require_token
from .keys import BACKGROUND, CONFIG, PLANNER, POKE, SCHEDULER, WEBHOOK_READS
from .params import error

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
PR_BUILD_ACTIONS = {"opened", "synchronize", "reopened"}
SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")


@dataclass(frozen=True)
class Push:
    repository: str  # owner/name
    branch: str
    sha: str
    message: str
    author: str


@dataclass(frozen=True)
class PullRequest:
    repository: str
    number: int
    sha: str
    base: str  # the branch it is to be merged into: what its test results are compared with
    fork: bool
    closed: bool
    association: str = ""  # GitHub's author_association: OWNER, MEMBER, CONTRIBUTOR…


def parse_delivery(event: str, payload: dict[str, Any]) -> Push | PullRequest | None:
    """What a delivery asks for; None for what asyncci ignores (tags, deletions, others)."""
    try:
        repository = str(payload["repository"]["full_name"])
        if event == "push":
            branch, sha = branch_of(str(payload["ref"])), str(payload["after"])
            if payload.get("deleted") or branch is None or set(sha) == {"0"}:
                return None
            head = payload.get("head_commit") or {}
            return Push(repository, branch, sha,
                        str(head.get("message") or ""), _author(head.get("author")))
        if event == "pull_request":
            action, pr = payload["action"], payload["pull_request"]
            if action not in PR_BUILD_ACTIONS | {"closed"}:
                return None
            head_repo = (pr["head"].get("repo") or {}).get("full_name")
            return PullRequest(
                repository, int(payload["number"]), str(pr["head"]["sha"]),
                base=str(pr["base"]["ref"]), fork=head_repo != pr["base"]["repo"]["full_name"],
                closed=action == "closed", association=str(pr.get("author_association") or ""),
            )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"malformed {event} payload: {e!r}") from None
    return None


def _author(author: Any) -> str:
    if not isinstance(author, dict):
        return ""
    name, email = author.get("name") or "", author.get("email") or ""
    return f"{name} <{email}>" if email else str(name)


@routes.post("/hooks/github")
async def github(request: web.Request) -> web.Response:
    """Anything that cannot be a signed delivery is refused before its body is read: up to
    25 MB (over that, 413) would otherwise be read for nothing."""
    config = request.app[CONFIG]
    secret = config.github.webhook_secret if config.github else None
    if secret is None:
        raise error(web.HTTPUnauthorized, "webhooks are off: no [github] webhook secret configured")
    signature = request.headers.get("X-Hub-Signature-256", "")
    if not SIGNATURE.fullmatch(signature):
        raise error(web.HTTPUnauthorized, "X-Hub-Signature-256 (sha256= and 64 hex digits) is"
                                          " required; SHA-1 alone is refused")
    async with request.app[WEBHOOK_READS]:
        body = await request.read()
    try:
        validate_event(body, signature=signature, secret=secret)
    except ValidationFailure:
        raise error(web.HTTPUnauthorized, "signature does not match") from None
    event = request.headers.get("X-GitHub-Event")
    delivery = request.headers.get("X-GitHub-Delivery")
    if not event or not delivery:
        raise error(web.HTTPBadRequest, "X-GitHub-Event and X-GitHub-Delivery are required")
    if request.content_type != "application/json":
        raise error(web.HTTPBadRequest, "the content type must be application/json")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise error(web.HTTPBadRequest, "the body is not JSON") from None
    if not isinstance(payload, dict):
        raise error(web.HTTPBadRequest, "the body must be a JSON object")
    if event == "ping":
        return web.json_response({"pong": delivery})
    try:
        wanted = parse_delivery(event, payload)
    except ValueError as e:
        raise error(web.HTTPBadRequest, str(e)) from None
    repos = [] if wanted is None else [
        r for r in config.repos if r.github and r.github.lower() == wanted.repository.lower()]
    if wanted is not None and not repos:
        log.info("delivery %s: %s for %s, which no [[repos]] names", delivery, event,
                 wanted.repository)
    for repo in repos:
        assert wanted is not None
        _later(request, act(request.app, repo, wanted, delivery))
    return web.json_response({"delivery": delivery, "repos": [r.name for r in repos]},
                             status=202)


def _later(request: web.Request, work: Coroutine[Any, Any, None]) -> None:
    tasks = request.app[BACKGROUND]
    task = asyncio.create_task(work)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def act(app: web.Application, repo: RepoConfig, wanted: Push | PullRequest,
              delivery: str) -> None:
    planner = app[PLANNER]
    try:
        if isinstance(wanted, Push):
            if branch_matches(repo.branches, wanted.branch):
                commit = Commit(wanted.sha, wanted.message, wanted.author)
                await planner.branch_build(repo, branch_ref(wanted.branch), commit, Event.PUSH)
        elif repo.pull_requests:
            ref = pull_ref(wanted.number)
            if wanted.closed:
                await app[SCHEDULER].cancel_ref(repo.name, ref, f"pull request {wanted.number} closed")
                return
            await planner.pull_request(repo, wanted.number, wanted.sha, wanted.base,
                                       wanted.fork, wanted.association)
    except PlanError as e:
        log.warning("delivery %s for repo %s: no build: %s", delivery, repo.name, e)


@routes.post("/hooks/poke/{repo}")
async def poke(request: web.Request) -> web.Response:
    require_token(request)
    name = load_repo(request).name
    request.app[POKE](name)
    return web.json_response({"poked": name}, status=202)
