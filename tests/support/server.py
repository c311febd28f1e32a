"""The real server, as a subprocess (for faults: SIGKILL, restart) or in the test's loop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from asyncci.config import load_config
from asyncci.server import KILL_GRACE_S, Server

from .wait import until, until_sync

TOKEN = "test-token-0123456789"


def http(method: str, url: str, body: Any = None, token: str | None = TOKEN) -> tuple[int, Any]:
    """One blocking HTTP call; (status, parsed JSON or raw bytes)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw, kind = response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as e:
        status, raw, kind = e.code, e.read(), e.headers.get_content_type()
    return status, json.loads(raw) if kind == "application/json" else raw


class ServerProcess:
    """`asyncci serve` in a child process, stopped by its PID."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.url = load_config(config).server.public_url.rstrip("/")
        self.log = config.parent / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "asyncci.cli", "serve", "-c", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "ASYNCCI_TEST_TOKEN": TOKEN},
            )
        until_sync(self._healthy, 30, f"server on {self.url} (log: {self.log})")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited {self.proc.returncode}: {self.log.read_text()}")
        try:
            return http("GET", self.url + "/healthz")[0] == 200
        except OSError:
            return False

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 15) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def get(self, path: str) -> Any:
        status, answer = http("GET", self.url + path)
        assert status == 200, (status, answer)
        return answer

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return http("POST", self.url + path, body if body is not None else {})


@asynccontextmanager
async def running_server(config_path: Path, kill_grace: float = KILL_GRACE_S
                         ) -> AsyncIterator[Server]:
    """The server in this event loop, for tests that look inside it; a short `kill_grace`
    for a test that would wait out SPEC's 10 s between SIGTERM and SIGKILL."""
    os.environ["ASYNCCI_TEST_TOKEN"] = TOKEN
    server = await Server.build(load_config(config_path), kill_grace)
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop))
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait([task, ready], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()  # raises what stopped it
    assert server.ready.is_set(), "server not ready within 30s"
    try:
        yield server
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


class Api:
    """The JSON API of a server in this loop, through a real HTTP client."""

    def __init__(self, server: Server) -> None:
        self.url = server.config.server.public_url.rstrip("/")
        self._session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})

    async def close(self) -> None:
        await self._session.close()

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        async with self._session.request(method, self.url + path, json=body, **kw) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.read()

    async def get(self, path: str) -> Any:
        status, answer = await self.call("GET", path)
        assert status == 200, (status, answer)
        return answer

    async def build(self, build_id: int, state: str | None = None, timeout: float = 30) -> Any:
        """The build, once it is in `state` (or finished, when no state is named)."""
        async def check() -> Any:
            build = await self.get(f"/api/builds/{build_id}")
            done = build["state"] == state if state else build["finished_at"] is not None
            return build if done else None
        return await until(check, timeout, f"build {build_id} {state or 'finished'}")


@asynccontextmanager
async def api_for(server: Server) -> AsyncIterator[Api]:
    api = Api(server)
    try:
        yield api
    finally:
        await api.close()
