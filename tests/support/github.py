"""The one stand-in of the suite: GitHub's statuses API on 127.0.0.1, recording what
asyncci sends and answering as GitHub does (201 and the status), or with the failures a
test asks for."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

PAYLOADS = Path(__file__).resolve().parent.parent / "payloads"


@dataclass
class FakeGitHub:
    url: str = ""
    statuses: list[dict[str, Any]] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)  # statuses to answer with, first
    tokens: list[str] = field(default_factory=list)
    app_calls: list[str] = field(default_factory=list)

    async def status(self, request: web.Request) -> web.Response:
        self.tokens.append(request.headers.get("Authorization", ""))
        if self.failures:
            failure = self.failures.pop(0)
            if failure == 403:  # GitHub's primary rate limit
                headers = {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "0",
                           "X-RateLimit-Reset": str(int(time.time()) + 1)}
                return web.json_response({"message": "API rate limit exceeded"}, status=403,
                                         headers=headers)
            return web.json_response({"message": "Server Error"}, status=failure)
        body = await request.json()
        self.statuses.append({"repo": f"{request.match_info['owner']}/{request.match_info['name']}",
                              "sha": request.match_info["sha"], **body})
        return web.json_response({"id": len(self.statuses), **body}, status=201)

    async def installation(self, request: web.Request) -> web.Response:
        self.app_calls.append(request.headers.get("Authorization", "").split(" ")[0])
        return web.json_response({"id": 42})

    async def access_token(self, request: web.Request) -> web.Response:
        self.app_calls.append(f"token for installation {request.match_info['id']}")
        return web.json_response({"token": "installation-token",
                                  "expires_at": "2099-01-01T00:00:00Z"}, status=201)

    def contexts(self) -> list[tuple[str, str]]:
        return [(s["context"], s["state"]) for s in self.statuses]


@asynccontextmanager
async def fake_github() -> AsyncIterator[FakeGitHub]:
    github = FakeGitHub()
    app = web.Application()
    app.router.add_post("/repos/{owner}/{name}/statuses/{sha}", github.status)
    app.router.add_get("/repos/{owner}/{name}/installation", github.installation)
    app.router.add_post("/app/installations/{id}/access_tokens", github.access_token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    github.url = f"http://127.0.0.1:{port}"
    try:
        yield github
    finally:
        await runner.cleanup()


def payload(name: str, **replace: str) -> bytes:
    """A delivery from tests/payloads, with placeholders like {sha} filled in."""
    text = (PAYLOADS / f"{name}.json").read_text()
    for key, value in replace.items():
        text = text.replace("{" + key + "}", value)
    json.loads(text)  # still valid JSON
    return text.encode()


def signed(body: bytes, secret: str, event: str, delivery: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery, "Content-Type": "application/json"}
