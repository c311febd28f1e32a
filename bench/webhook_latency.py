"""Signed push webhook → job `running` on an idle local host: p50 and p99 over 200 pushes
of commits the server's mirror already has (so no git fetch), the same for a commit it
must fetch first, and webhooks per second accepted while 16 jobs run.
    .venv/bin/python bench/webhook_latency.py [--pushes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.config import make_config  # noqa: E402
from tests.support.github import fake_github, payload, signed  # noqa: E402
from tests.support.gitrepo import GitRepo  # noqa: E402
from tests.support.server import TOKEN, ServerProcess  # noqa: E402

SECRET = "bench-secret"


async def push(http: aiohttp.ClientSession, url: str, sha: str, n: int) -> int:
    body = payload("push", branch="main", sha=sha, message=f"commit {n}", repository="octo/demo")
    async with http.post(url + "/hooks/github", data=io.BytesIO(body),
                         headers=signed(body, SECRET, "push", f"delivery-{n}")) as r:
        return r.status


async def wait_idle(http: aiohttp.ClientSession, url: str) -> None:
    while True:
        async with http.get(url + "/api/builds", params={"state": "running", "limit": "1"}) as r:
            running = (await r.json())["builds"]
        async with http.get(url + "/api/queue") as r:
            queued = (await r.json())["jobs"]
        if not running and not queued:
            return
        await asyncio.sleep(0.01)


async def started_at(http: aiohttp.ClientSession, url: str, sha: str) -> float:
    while True:
        async with http.get(url + "/api/builds", params={"limit": "5"}) as r:
            for build in (await r.json())["builds"]:
                if build["sha"] == sha and build["jobs"][0]["started_at"]:
                    return datetime.fromisoformat(build["jobs"][0]["started_at"]).timestamp()
        await asyncio.sleep(0.01)


async def latency(url: str, shas: list[str]) -> list[float]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        seconds = []
        for n, sha in enumerate(shas):
            await wait_idle(http, url)
            sent = time.time()
            assert await push(http, url, sha, n) == 202
            seconds.append(await started_at(http, url, sha) - sent)
        return seconds


async def accept_rate(url: str, sha: str, sha_base: int, duration: float = 5.0) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for _ in range(16):
            async with http.post(url + "/api/repos/demo/builds", json={"sha": sha}) as r:
                assert r.status == 201
        accepted = 0
        deadline = time.monotonic() + duration

        async def sender(worker: int) -> None:
            nonlocal accepted
            n = 0
            while time.monotonic() < deadline:
                if await push(http, url, sha, sha_base + worker * 100_000 + n) == 202:
                    accepted += 1
                n += 1

        started = time.monotonic()
        await asyncio.gather(*(sender(w) for w in range(8)))
        return accepted / (time.monotonic() - started)


def ms(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if len(values) > 2 else values[0] * 1000


async def main(pushes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = GitRepo(root / "repo")
        shas = [repo.commit(f"commit {i}") for i in range(pushes)]
        async with fake_github() as github:
            os.environ["ASYNCCI_WEBHOOK_SECRET"] = SECRET
            config = make_config(
                root, [{"name": "demo", "url": str(repo.path), "github": "octo/demo",
                        "script": 'case "$ASYNCCI_EVENT" in manual) sleep 15;; esac'}],
                hosts=[{"name": "local", "type": "local", "slots": 16,
                        "workdir": str(root / "work")}],
                github={"api_url": github.url},
            )
            server = ServerProcess(config)
            await asyncio.to_thread(server.start)
            try:
                await latency(server.url, [shas[-1]])  # fills the server's mirror once
                warm = await latency(server.url, shas[:-1])
                fresh = repo.commit("not fetched yet")
                cold = await latency(server.url, [fresh])
                rate = await accept_rate(server.url, shas[0], 10**6)
            finally:
                server.kill()
    print(f"webhook → running, mirror has the commit: p50 {ms(warm, 50):.1f} ms, "
          f"p99 {ms(warm, 99):.1f} ms over {len(warm)} pushes")
    print(f"webhook → running, with the git fetch:    {cold[0] * 1000:.1f} ms (one push)")
    print(f"webhooks accepted while 16 jobs run: {rate:.0f}/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--pushes", type=int, default=200)
    asyncio.run(main(parser.parse_args().pushes))
