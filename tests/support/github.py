"""The one stand-in of the suite: GitHub's statuses API on 127.0.0.1, recording what
asyncci sends and answering as GitHub does (201 and the status), or with the failures a
test asks for."""

from __future__ import annotations

import hashlib
import hmac
import json
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

    async def status(self, request: web.Request) -> web.Response:
        self.tokens.append(request.headers.get("Authorization", ""))
        if self.failures:
            return web.json_response({"message": "Server Error"}, status=self.failures.pop(0))
        body = await request.json()
        self.statuses.append({"repo": f"{request.match_info['owner']}/{request.match_info['name']}",
                              "sha": request.match_info["sha"], **body})
        return web.json_response({"id": len(self.statuses), **body}, status=201)

    def contexts(self) -> list[tuple[str, str]]:
        return [(s["context"], s["state"]) for s in self.statuses]


@asynccontextmanager
async def fake_github() -> AsyncIterator[FakeGitHub]:
    github = FakeGitHub()
    app = web.Application()
    app.router.add_post("/repos/{owner}/{name}/statuses/{sha}", github.status)
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
