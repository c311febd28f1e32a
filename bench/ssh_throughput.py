"""1000 no-op builds over 4 sshd hosts × 4 slots on loopback, end to end, against two
references over asyncssh directly (one connection per host, 16 in flight):
(1) the same jobs' job.sh with no server around it, (2) bare `true` commands.
    .venv/bin/python bench/ssh_throughput.py [--builds 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncci.config import HostConfig, load_config  # noqa: E402
from asyncci.hosts.base import JobRun  # noqa: E402
from asyncci.hosts.wrapper import Wrapper, command  # noqa: E402
from asyncci.server import KILL_GRACE_S  # noqa: E402
from bench.throughput import bench_server  # noqa: E402
from tests.support.config import make_config  # noqa: E402
from tests.support.gitrepo import GitRepo  # noqa: E402
from tests.support.sshd import Sshd  # noqa: E402

HOSTS, SLOTS = 4, 4


def reference_hosts(root: Path, servers: list[Sshd]) -> list[HostConfig]:
    """The reference's hosts as the config reads them, each with a workdir of its own."""
    root.mkdir()
    hosts = [{**s.host(f"ref{i}", slots=SLOTS), "workdir": f"{s.workdir}-ref"}
             for i, s in enumerate(servers)]
    return list(load_config(make_config(root, [{"name": "ref", "url": "/dev/null"}],
                                        hosts=hosts)).hosts)


async def reference(servers: list[Sshd], configs: list[HostConfig], jobs: int,
                    repo: GitRepo | None) -> float:
    """Seconds for `jobs` commands over one connection per host, SLOTS in flight each:
    job.sh runs (checkout, run, stream) when a repo is given, else bare `true`."""
    conns = [await asyncssh.connect("127.0.0.1", s.port, client_keys=[str(s.client_key)],
                                    known_hosts=str(s.known_hosts), config=None)
             for s in servers]
    sha = repo.head() if repo else ""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(jobs):
        queue.put_nowait(n)

    async def worker(host: int, slot: int) -> None:
        conn, config = conns[host], configs[host]
        wrapper = Wrapper(config, config.workdir, KILL_GRACE_S)
        while not queue.empty():
            n = queue.get_nowait()
            if repo is None:
                await conn.run("true", check=True)
                continue
            run = JobRun(n + 1, 1, "bench", str(repo.path), sha, "refs/heads/main", slot, "true")
            data = wrapper.input("start", run)
            proc = await conn.create_process(command(data), encoding=None)
            proc.stdin.write(data)
            proc.stdin.write_eof()
            while await proc.stdout.read(1 << 16):
                pass
            status = await proc.stderr.read()
            assert status.strip().endswith(b"asyncci-exit 0"), status

    started = time.monotonic()
    await asyncio.gather(*(worker(h, s) for h in range(HOSTS) for s in range(SLOTS)))
    elapsed = time.monotonic() - started
    for conn in conns:
        conn.close()
        await conn.wait_closed()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--builds", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        servers = [Sshd(root, f"host{i}").start() for i in range(HOSTS)]
        try:
            hosts = [s.host(f"h{i}", slots=SLOTS) for i, s in enumerate(servers)]
            run = bench_server(root / "server", hosts, args.builds)
            repo = GitRepo(root / "ref-repo")
            repo.commit("reference")
            configs = reference_hosts(root / "ref", servers)
            asyncio.run(reference(servers, configs, HOSTS * SLOTS, repo))  # warm the mirrors
            jobs_s = asyncio.run(reference(servers, configs, args.builds, repo))
            floor_s = asyncio.run(reference(servers, configs, args.builds, None))
        finally:
            for s in servers:
                s.stop()
    n = args.builds
    server_s = run.seconds
    print(f"asyncci      {n} builds, {HOSTS} hosts x {SLOTS} slots: {server_s:6.1f} s "
          f"({n / server_s:.0f}/s), server peak RSS {run.rss_mb:.0f} MB, "
          f"CPU {run.cpu_s / n * 1000:.2f} ms per build")
    print(f"reference 1  {n} job.sh runs over asyncssh:        {jobs_s:6.1f} s ({n / jobs_s:.0f}/s)")
    print(f"reference 2  {n} bare `true` over asyncssh:        {floor_s:6.1f} s ({n / floor_s:.0f}/s)")
    print(f"asyncci / reference 1 = {server_s / jobs_s:.2f}x;  asyncci / reference 2 = "
          f"{server_s / floor_s:.2f}x")


if __name__ == "__main__":
    main()
