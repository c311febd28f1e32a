"""500 no-op builds on a local host with 4 slots, end to end (enqueue → passed).

Prints builds per second and the server's peak RSS. Run from the repository root:
    .venv/bin/python bench/throughput.py [--builds 500] [--slots 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.config import make_config  # noqa: E402
from tests.support.gitrepo import GitRepo  # noqa: E402
from tests.support.server import TOKEN, ServerProcess  # noqa: E402


async def run(server: ServerProcess, sha: str, builds: int) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(server.url, headers=headers) as http:
        started = time.monotonic()
        ids = []
        for _ in range(builds):
            async with http.post("/api/repos/bench/builds", json={"sha": sha}) as r:
                assert r.status == 201, await r.text()
                ids.append((await r.json())["id"])
        print(f"enqueued {builds} builds over the API in {time.monotonic() - started:.1f} s")
        while True:
            async with http.get("/api/builds", params={"state": "passed", "limit": "1"}) as r:
                newest = (await r.json())["builds"]
            async with http.get("/api/builds", params={"limit": "500"}) as r:
                states = [b["state"] for b in (await r.json())["builds"]]
            if newest and len(states) >= builds and all(s == "passed" for s in states):
                return time.monotonic() - started
            bad = [s for s in states if s in ("failed", "errored", "cancelled")]
            assert not bad, bad
            await asyncio.sleep(0.5)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--builds", type=int, default=500)
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = GitRepo(root / "repo")
        sha = repo.commit("bench")
        config = make_config(
            root, [{"name": "bench", "url": str(repo.path), "script": "true"}],
            hosts=[{"name": "local", "type": "local", "slots": args.slots,
                    "workdir": str(root / "work")}],
        )
        server = ServerProcess(config).start()
        try:
            assert server.proc is not None
            seconds = asyncio.run(run(server, sha, args.builds))
            rss = peak_rss_mb(server.proc.pid)
        finally:
            server.kill()
    print(f"throughput  {args.builds} no-op builds, local host, {args.slots} slots: "
          f"{seconds:.1f} s, {args.builds / seconds:.1f} builds/s end to end")
    print(f"server peak RSS: {rss:.1f} MB (pid {os.getpid()} ran the client)")


if __name__ == "__main__":
    main()
