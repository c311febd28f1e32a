"""What asking for a build costs: builds enqueued per second over
`POST /api/repos/{repo}/builds`, from a few concurrent clients, on a real server whose
only host is drained (nothing runs, so the figure is the planner's and the store's).
    .venv/bin/python bench/enqueue.py /tmp/asyncci-enqueue [--builds 1000] [--clients 8]
        [--profile /tmp/enqueue.prof]
Two rounds of `--builds` requests each:
- distinct commits: `{"ref": "b17", "sha": …}`, one branch per commit, each commit with its
  own `.asyncci.toml`, so every build reads a commit's message and author and its pipeline
  file. The branch head is the sha asked for, so the planner trusts it without a fetch (a
  request naming a sha alone fetches every branch first to find which ones hold it);
- one commit: `{"ref": "main", "sha": HEAD}` again and again (the commit's metadata is
  cached; its pipeline file is read each time).
Besides builds/s it prints the CPU the server used per build, and the CPU of the git
processes it ran. `--profile` runs the server under cProfile (stopped with SIGTERM so
the profile is written) and prints where its time went. Issue goal: ≥ 500 builds/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncci.store import Store  # noqa: E402
from tests.support.config import make_config  # noqa: E402
from tests.support.gitrepo import ENV, GitRepo  # noqa: E402
from tests.support.server import TOKEN, ServerProcess, http  # noqa: E402
from tests.support.wait import until_sync  # noqa: E402

PIPELINE = '[[jobs]]\nname = "test"\nscript = "make test  # commit {n}"\n'
TICK = os.sysconf("SC_CLK_TCK")


def make_repo(path: Path, commits: int) -> list[str]:
    """`commits` commits on main, each changing `.asyncci.toml`, and a branch `bN` at
    the Nth; written with one `git fast-import`, as 3 git processes per commit would take
    longer than the bench."""
    repo = GitRepo(path)
    stream = []
    for n in range(commits):
        data = PIPELINE.format(n=n).encode()
        message = f"commit {n}\n\nwhich changes the pipeline file\n".encode()
        stream += [b"commit refs/heads/main", b"mark :%d" % (n + 1),
                   b"author Ada Tester <ada@example.org> 1795428000 +0000",
                   b"committer Ada Tester <ada@example.org> 1795428000 +0000",
                   b"data %d" % len(message), message]
        stream += [b"M 100644 inline .asyncci.toml", b"data %d" % len(data), data]
    stream += [b"reset refs/heads/b%d\nfrom :%d\n" % (n, n + 1) for n in range(commits)]
    subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input=b"\n".join(stream) + b"\n",
                   check=True, env={**os.environ, **ENV})
    return [repo.head(f"b{n}") for n in range(commits)]


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(the server's own CPU, its git children's: those it reaped and those still alive)."""
    def fields(p: int | str) -> list[str]:
        return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
    own = fields(pid)
    children = sum(int(own[i]) for i in (13, 14))  # cutime, cstime
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                children += sum(int(fields(child)[i]) for i in (11, 12))
            except FileNotFoundError:
                pass
    return (int(own[11]) + int(own[12])) / TICK, children / TICK


async def enqueue(url: str, bodies: list[dict[str, str]], clients: int) -> float:
    """Seconds to POST every body, `clients` requests in flight at a time."""
    todo = iter(bodies)

    async def client(http: aiohttp.ClientSession) -> None:
        for body in todo:
            async with http.post("/api/repos/bench/builds", json=body) as r:
                assert r.status == 201, await r.text()

    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - started


def start(config: Path, profile: Path | None) -> tuple[ServerProcess, int]:
    """The server, and the pid of the python running it."""
    if profile is None:
        server = ServerProcess(config).start()
        assert server.proc is not None
        return server, server.proc.pid
    server = ServerProcess(config)
    with server.log.open("ab") as out:
        server.proc = subprocess.Popen(
            [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "asyncci.cli",
             "serve", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env={**os.environ, "ASYNCCI_TEST_TOKEN": TOKEN})
    until_sync(server._healthy, 30, "the profiled server")
    return server, server.proc.pid


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--builds", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    root, builds = args.root, args.builds
    root.mkdir(parents=True, exist_ok=True)
    if (root / "data").exists() or (root / "repo").exists():
        raise SystemExit(f"{root} must be new: each run starts from an empty queue")
    shas = make_repo(root / "repo", builds)
    store = await Store.open(root / "data" / "asyncci.db")
    await store.set_drained("local", True)
    await store.close()
    config = make_config(root, [{"name": "bench", "url": str(root / "repo"), "script": "",
                                 "branches": ["main", "b*"]}],
                         hosts=[{"name": "local", "type": "local", "slots": 4,
                                 "workdir": str(root / "work")}])
    server, pid = start(config, args.profile)
    try:
        # One build of a sha alone fetches every branch into the mirror, as a poll would.
        status, answer = http("POST", server.url + "/api/repos/bench/builds", {"sha": shas[0]})
        assert status == 201 and not answer["untrusted"], answer
        rounds = [("distinct commits", [{"ref": f"b{n}", "sha": sha} for n, sha in enumerate(shas)]),
                  ("one commit", [{"ref": "main", "sha": shas[-1]}] * builds)]
        for name, bodies in rounds:
            cpu, git = cpu_seconds(pid)
            seconds = await enqueue(server.url, bodies, args.clients)
            cpu_after, git_after = cpu_seconds(pid)
            print(f"{name:<17} {builds} builds in {seconds:5.2f} s: {builds / seconds:6.0f}/s;"
                  f" server CPU {(cpu_after - cpu) / builds * 1000:.2f} ms/build,"
                  f" git {(git_after - git) / builds * 1000:.2f} ms/build", flush=True)
        total = server.get("/api/builds?limit=1")["builds"][0]["id"]
        assert total == 2 * builds + 1, total
    finally:
        server.kill(signal.SIGTERM if args.profile else signal.SIGKILL, timeout=60)
    if args.profile:
        stats = pstats.Stats(str(args.profile))
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    asyncio.run(main())
