"""Fill a data dir with N finished builds (and their jobs) through the store, for
bench/web.py. Branches, states and events vary like a busy repo's.
    .venv/bin/python bench/fill.py DATA_DIR [--builds 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncci.model import BuildRequest, Event, JobSpec, JobState  # noqa: E402
from asyncci.store import Store  # noqa: E402

STATES = [JobState.PASSED] * 6 + [JobState.FAILED, JobState.ERRORED, JobState.CANCELLED]


async def fill(data_dir: Path, builds: int) -> None:
    store = await Store.open(data_dir / "asyncci.db")
    spec = JobSpec(name="build", script="make test")
    started = time.monotonic()
    try:
        for n in range(builds):
            branch = "main" if n % 3 else f"feature/{n % 200}"
            request = BuildRequest(repo="demo", ref=f"refs/heads/{branch}", sha=f"{n:040x}",
                                   event=Event.PUSH, trigger_key=f"fill\0{n}",
                                   message=f"commit {n}\n\nwith a body", author="Ada <ada@x>")
            build = (await store.enqueue_build(request, [spec])).build
            job = build.jobs[0]
            await store.claim_job(job.id, "local", n % 4)
            state = STATES[n % len(STATES)]
            await store.finish_job(job.id, 1, state, 0 if state is JobState.PASSED else 1)
            if n % 10_000 == 0 and n:
                print(f"{n} builds, {n / (time.monotonic() - started):.0f}/s", flush=True)
    finally:
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--builds", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(fill(args.data_dir, args.builds))
