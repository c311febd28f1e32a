"""One server, 100 SSH hosts on loopback (2 slots each), 10,000 queued no-op jobs.

Prints the server's RSS and CPU (in % of one core) while idle with every host online
(keepalives only), the latency of `/` and `/api/queue` with the queue full (hosts
drained) and while it drains, the CPU a job costs the server, and the drain rate.
Goal (issue "Cost per build"): idle CPU < 2 %, RSS < 200 MB, no page over 50 ms p99.
Run from the repository root (needs ~100 sshd processes and a few GB of RAM):
    .venv/bin/python bench/many_hosts.py [--hosts 100] [--builds 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throughput import cpu_s  # noqa: E402
from tests.support.config import make_config  # noqa: E402
from tests.support.gitrepo import GitRepo  # noqa: E402
from tests.support.server import TOKEN, ServerProcess  # noqa: E402
from tests.support.sshd import Sshd  # noqa: E402

JOBS_PER_BUILD = 100  # a matrix of 100: the most one build may have
IDLE_S = 10.0


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size in MB."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


async def latencies(http: aiohttp.ClientSession, path: str, seconds: float, gap: float = 0.0
                    ) -> list[float]:
    """Milliseconds per GET of `path`, for `seconds`, `gap` seconds apart (while the queue
    drains, so that the pages' own cost stays out of the CPU a job costs)."""
    times = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        async with http.get(path) as r:
            assert r.status == 200, (path, r.status)
            await r.read()
        times.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(gap)
    return times


def show(label: str, times: list[float]) -> str:
    times = sorted(times)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return f"{label:<28} p50 {statistics.median(times):6.1f} ms  p99 {p99:6.1f} ms  (n={len(times)})"


async def hosts_state(http: aiohttp.ClientSession) -> list[str]:
    async with http.get("/api/hosts") as r:
        return [h["state"] for h in (await r.json())["hosts"]]


async def queued(http: aiohttp.ClientSession) -> int:
    async with http.get("/api/queue", params={"limit": "1"}) as r:
        return int((await r.json())["total"])


async def measure(server: ServerProcess, hosts: list[str], builds: int, sha: str) -> None:
    assert server.proc is not None
    pid = server.proc.pid
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(server.url, headers=headers) as http:
        deadline = time.monotonic() + 120
        while set(await hosts_state(http)) != {"online"}:
            assert time.monotonic() < deadline, "hosts did not come online"
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # let the last probes settle
        before = cpu_s(pid)
        await asyncio.sleep(IDLE_S)
        idle = (cpu_s(pid) - before) / IDLE_S * 100
        print(f"idle, {len(hosts)} hosts online: CPU {idle:.2f} % of a core, "
              f"RSS {rss_mb(pid)[0]:.0f} MB")

        for name in hosts:
            async with http.post(f"/api/hosts/{name}/drain") as r:
                assert r.status == 200, await r.text()
        started = time.monotonic()
        for _ in range(builds):
            async with http.post("/api/repos/bench/builds", json={"ref": "main", "sha": sha}) as r:
                assert r.status == 201, await r.text()
        jobs = await queued(http)
        print(f"enqueued {builds} builds, {jobs} jobs, in {time.monotonic() - started:.1f} s")
        print(show("/ (queue full, drained)", await latencies(http, "/", 5)))
        print(show("/api/queue (queue full)", await latencies(http, "/api/queue", 5)))

        before, started = cpu_s(pid), time.monotonic()
        for name in hosts:
            async with http.post(f"/api/hosts/{name}/resume") as r:
                assert r.status == 200, await r.text()
        pages: dict[str, list[float]] = {"/": [], "/api/queue": []}
        while await queued(http):
            for path, times in pages.items():
                times += await latencies(http, path, 0.5, gap=0.25)
        while "running" in {b["state"] for b in (await (await http.get(
                "/api/builds", params={"limit": "100"})).json())["builds"]}:
            await asyncio.sleep(0.2)
        seconds, used = time.monotonic() - started, cpu_s(pid) - before
        print(f"drained {jobs} jobs in {seconds:.1f} s: {jobs / seconds:.0f} jobs/s, server CPU "
              f"{used / seconds * 100:.0f} % of a core, {used / jobs * 1000:.2f} ms CPU per job")
        for path, times in pages.items():
            print(show(f"{path} (while draining)", times))
        print(f"server RSS now {rss_mb(pid)[0]:.0f} MB, peak {rss_mb(pid)[1]:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--builds", type=int, default=100, help="of 100 jobs each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = GitRepo(root / "repo")
        sha = repo.commit("bench", {".asyncci.toml": (
            '[[jobs]]\nname = "noop"\nscript = "true"\n'
            f"matrix = {{ n = {list(range(JOBS_PER_BUILD))} }}\n")})
        servers: list[Sshd] = []
        try:
            for i in range(args.hosts):
                servers.append(Sshd(root, f"host{i}").start())
            hosts = [s.host(f"h{i}", slots=2) for i, s in enumerate(servers)]
            config = make_config(root, [{"name": "bench", "url": str(repo.path)}], hosts=hosts)
            server = ServerProcess(config).start()
            try:
                asyncio.run(measure(server, [str(h["name"]) for h in hosts], args.builds, sha))
            finally:
                server.kill()
        finally:
            for s in servers:
                s.stop()


if __name__ == "__main__":
    main()
