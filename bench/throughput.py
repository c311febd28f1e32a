"""500 no-op builds on a local host with 4 slots, end to end (enqueue → passed).

Each is asked for as a push names it, by branch and sha (a bare sha costs a fetch of every
branch first, to judge its trust: bench/enqueue.py measures asking). Prints builds per
second, the server's peak RSS and its CPU per build. Run from the repository root:
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
from typing import Any, NamedTuple

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.config import make_config  # noqa: E402
from tests.support.gitrepo import GitRepo  # noqa: E402
from tests.support.server import TOKEN, ServerProcess  # noqa: E402


async def run_builds(server: ServerProcess, sha: str, builds: int) -> float:
    """Seconds from the first build asked for to the last one passed."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(server.url, headers=headers) as http:
        started = time.monotonic()
        for _ in range(builds):
            async with http.post("/api/repos/bench/builds", json={"ref": "main", "sha": sha}) as r:
                assert r.status == 201, await r.text()
        print(f"enqueued {builds} builds over the API in {time.monotonic() - started:.1f} s")
        while True:
            async with http.get("/api/queue") as r:
                queued = (await r.json())["jobs"]
            async with http.get("/api/builds", params={"state": "running", "limit": "1"}) as r:
                running = (await r.json())["builds"]
            if not queued and not running:
                elapsed = time.monotonic() - started
                break
            await asyncio.sleep(0.2)
        async with http.get("/api/builds", params={"state": "passed", "limit": "500"}) as r:
            passed = len((await r.json())["builds"])
        assert passed == min(builds, 500), f"only {passed} passed"
        return elapsed


def cpu_s(pid: int) -> float:
    """CPU seconds the process and its reaped children (git) used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # u, s, cu, cs


class Run(NamedTuple):
    seconds: float
    rss_mb: float  # the server's peak
    cpu_s: float  # the server's, while the builds ran


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_server(root: Path, hosts: list[dict[str, Any]], builds: int,
                 **repo_keys: Any) -> Run:
    """`builds` no-op builds on `hosts`, end to end."""
    repo = GitRepo(root / "repo")
    sha = repo.commit("bench")
    config = make_config(root, [{"name": "bench", "url": str(repo.path), "script": "true",
                                 **repo_keys}], hosts=hosts)
    server = ServerProcess(config).start()
    try:
        assert server.proc is not None
        deadline = time.monotonic() + 30
        while any(h["state"] != "online" for h in server.get("/api/hosts")["hosts"]):
            assert time.monotonic() < deadline, "hosts did not come online"
            time.sleep(0.1)
        before = cpu_s(server.proc.pid)
        seconds = asyncio.run(run_builds(server, sha, builds))
        return Run(seconds, peak_rss_mb(server.proc.pid), cpu_s(server.proc.pid) - before)
    finally:
        server.kill()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--builds", type=int, default=500)
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hosts = [{"name": "local", "type": "local", "slots": args.slots,
                  "workdir": str(Path(tmp) / "work")}]
        run = bench_server(Path(tmp), hosts, args.builds)
    print(f"throughput  {args.builds} no-op builds, local host, {args.slots} slots: "
          f"{run.seconds:.1f} s, {args.builds / run.seconds:.1f} builds/s end to end")
    print(f"server peak RSS: {run.rss_mb:.1f} MB, CPU {run.cpu_s / args.builds * 1000:.2f} ms"
          " per build (a local host's jobs are its children: counted in)")


if __name__ == "__main__":
    main()
