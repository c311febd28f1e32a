"""Page speed with a big history: `/`, `/repos/{repo}` and `/builds/{id}` under wrk (a real
HTTP load generator) against the running server, on a data dir filled by bench/fill.py.
    .venv/bin/python bench/fill.py /tmp/asyncci-web/data --builds 100000
    .venv/bin/python bench/web.py /tmp/asyncci-web [--seconds 10]
Prints requests/s and latency percentiles per page.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.config import make_config  # noqa: E402
from tests.support.gitrepo import GitRepo  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402


def wrk(url: str, seconds: int) -> tuple[float, str, str]:
    # Two clients at once, as a small team's dashboards: the figure is the page's own cost,
    # not queueing behind a crowd in a one-process server.
    out = subprocess.run(["wrk", "-t1", "-c2", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p50 = re.search(r"50%\s+(\S+)", out)[1]  # type: ignore[index]
    p99 = re.search(r"99%\s+(\S+)", out)[1]  # type: ignore[index]
    return rate, p50, p99


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path, help="holds data/ from bench/fill.py")
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    repo = GitRepo(args.root / "repo") if not (args.root / "repo").exists() else None
    if repo:
        repo.commit("bench")
    config = make_config(args.root, [{"name": "demo", "url": str(args.root / "repo"),
                                      "script": "true"}],
                         hosts=[{"name": "local", "type": "local", "slots": 2,
                                 "workdir": str(args.root / "work")}])
    server = ServerProcess(config).start()
    try:
        newest = server.get("/api/builds?limit=1")["builds"][0]["id"]
        for path in ("/", "/repos/demo", f"/builds/{newest // 2}"):
            rate, p50, p99 = wrk(server.url + path, args.seconds)
            print(f"{path:<16} {rate:8.0f} req/s   p50 {p50:>8}   p99 {p99:>8}")
    finally:
        server.kill()


if __name__ == "__main__":
    main()
