"""The queue's pages with 100,000 jobs queued: latency of `GET /api/queue` (its default
page, and its deepest), `/queue` and `/`, and how long the server's event loop is held
meanwhile, seen as the latency of `/healthz` asked every 5 ms by a second client.
Issue goal: /api/queue p99 < 50 ms, the loop never held more than 20 ms.
    .venv/bin/python bench/queue_pages.py /tmp/asyncci-queue [--jobs 100000] [--requests 200]
The data dir is filled once (50 repos' builds of 10 jobs each, on a drained host); the
figures are taken once the server has recovered the whole queue.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncci.model import BuildRequest, Event, JobSpec  # noqa: E402
from asyncci.store import Store  # noqa: E402
from tests.support.config import make_config  # noqa: E402
from tests.support.gitrepo import GitRepo  # noqa: E402
from tests.support.server import TOKEN, ServerProcess  # noqa: E402
from tests.support.wait import until_sync  # noqa: E402

REPOS = 50
JOBS_PER_BUILD = 10


async def fill(db: Path, jobs: int) -> None:
    store = await Store.open(db)
    try:
        specs = [JobSpec(f"job {i}", "true") for i in range(JOBS_PER_BUILD)]
        for n in range(jobs // JOBS_PER_BUILD):
            await store.enqueue_build(
                BuildRequest(repo=f"r{n % REPOS}", ref="refs/heads/main", sha=f"{n:040x}",
                             event=Event.PUSH, trigger_key=f"bench\0{n}"), specs)
        await store.set_drained("local", True)
    finally:
        await store.close()


async def timed(session: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with session.get(url) as response:
        await response.read()
        assert response.status == 200, response.status
    return (time.perf_counter() - started) * 1000


async def measure(base: str, path: str, requests: int) -> tuple[list[float], list[float]]:
    """(latencies of `path` asked one after another, latencies of /healthz meanwhile)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as load, aiohttp.ClientSession() as probe:
        done = asyncio.Event()
        probes: list[float] = []

        async def watch() -> None:
            while not done.is_set():
                probes.append(await timed(probe, base + "/healthz"))
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        latencies = [await timed(load, base + path) for _ in range(requests)]
        done.set()
        await watcher
    return latencies, probes


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    data = args.root / "data"
    if not (data / "asyncci.db").exists():
        started = time.monotonic()
        await fill(data / "asyncci.db", args.jobs)
        print(f"filled {args.jobs} queued jobs in {time.monotonic() - started:.0f} s")
    if not (args.root / "repo").exists():
        GitRepo(args.root / "repo").commit("bench")
    config = make_config(args.root, [{"name": f"r{i}", "url": str(args.root / "repo"),
                                      "script": "true"} for i in range(REPOS)],
                         hosts=[{"name": "local", "type": "local", "slots": 4,
                                 "workdir": str(args.root / "work")}])
    server = ServerProcess(config).start()
    try:
        until_sync(lambda: server.get("/api/queue?limit=1")["total"] == args.jobs, 120,
                   "the queue recovered")
        for path in ("/api/queue", "/api/queue?offset=9900", "/queue", "/"):
            latencies, probes = await measure(server.url, path, args.requests)
            print(f"{path:<24} p50 {pct(latencies, 50):6.1f} ms  p99 {pct(latencies, 99):6.1f} ms"
                  f"   /healthz meanwhile: p99 {pct(probes, 99):5.1f} ms, max {max(probes):5.1f} ms")
    finally:
        server.kill()


if __name__ == "__main__":
    asyncio.run(main())
