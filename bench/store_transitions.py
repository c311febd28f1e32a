"""Job transitions per second through the store on a fresh tmp database: N builds of one
job enqueued, each claimed, requeued (a lost host), claimed again and finished, one
transition at a time as the planner and scheduler make them. Builds report to GitHub, so
every transition writes its outbox row too.
    .venv/bin/python bench/store_transitions.py [--jobs 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncci.model import BuildRequest, Event, JobSpec, JobState  # noqa: E402
from asyncci.store import Store  # noqa: E402


async def timed(name: str, ids: list[int], step: Callable[[int, int], Awaitable[object]]
                ) -> None:
    started = time.perf_counter()
    for n, job_id in enumerate(ids):
        await step(n, job_id)
    took = time.perf_counter() - started
    print(f"{name:8} {len(ids) / took:8.0f}/s  ({len(ids)} in {took:.2f} s)", flush=True)


async def bench(jobs: int) -> None:
    spec = JobSpec(name="build", script="true")
    with tempfile.TemporaryDirectory() as scratch:
        store = await Store.open(Path(scratch) / "asyncci.db")
        try:
            ids: list[int] = []

            async def enqueue(n: int, _: int) -> None:
                request = BuildRequest(repo="demo", ref="refs/heads/main", sha=f"{n:040x}",
                                       event=Event.PUSH, trigger_key=f"bench\0{n}",
                                       github="octo/demo")
                ids.append((await store.enqueue_build(request, [spec])).build.jobs[0].id)

            await timed("enqueue", list(range(jobs)), enqueue)
            await timed("claim", ids, lambda n, j: store.claim_job(j, "local", n % 4))
            await timed("requeue", ids, lambda n, j: store.requeue_job(j, 1, "host lost"))
            await timed("claim", ids, lambda n, j: store.claim_job(j, "local", n % 4))
            await timed("finish", ids, lambda n, j: store.finish_job(j, 2, JobState.PASSED, 0))
        finally:
            await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    asyncio.run(bench(parser.parse_args().jobs))
