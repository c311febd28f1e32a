"""Page speed with a big history and big logs, under wrk (a real HTTP load generator)
against the running server, on a data dir filled by bench/fill.py:
    .venv/bin/python bench/fill.py /tmp/asyncci-web/data --builds 100000
    .venv/bin/python bench/web.py /tmp/asyncci-web [--seconds 10]
Measures `/`, `/repos/{repo}` and `/builds/{id}` of the filled history, then runs two
builds for real and measures their pages: one whose job prints a 50 MB log (its end, and
a page in its middle), and a 20-job matrix; and a search over the 50 MB log. Prints requests/s and latency percentiles per page; the goals are p99 < 50 ms
for a page and < 500 ms for a search.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.config import make_config  # noqa: E402
from tests.support.gitrepo import GitRepo  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402
from tests.support.wait import until_sync  # noqa: E402

# 555,000 coloured lines with a link each and a section every 50,000: 49.5 MB, just
# under the default 50 MB cap. The needle is in the last line: a search reads it all.
BIG_LOG = r"""awk 'BEGIN { for (i = 1; i <= 555000; i++) {
  if (i % 50000 == 1) print "--- step " i
  printf "\033[32m%d\033[0m compiling module %d of the project,", i, i * 7
  printf " see https://example.org/m/%d\n", i
} print "error: the needle is here" }'"""
MATRIX = """
[[jobs]]
name = "test"
script = "seq -f 'matrix line %g' 1 2000"
matrix = { n = [NUMBERS] }
""".replace("NUMBERS", ", ".join(f'"{n}"' for n in range(1, 21)))


def wrk(url: str, seconds: int, connections: int = 2) -> tuple[float, str, str]:
    # Two clients at once, as a small team's dashboards: the figure is the page's own cost,
    # not queueing behind a crowd in a one-process server.
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p50 = re.search(r"^\s*50%\s+(\S+)", out, re.M)[1]  # type: ignore[index]
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.M)[1]  # type: ignore[index]
    return rate, p50, p99


def repo_at(path: Path, files: dict[str, str] | None = None) -> str:
    """A git repo to build, made once."""
    if not path.exists():
        GitRepo(path).commit("bench", files)
    return str(path)


def built(server: ServerProcess, repo: str) -> Any:
    """A new build of `repo`, once it finished."""
    status, build = server.post(f"/api/repos/{repo}/builds")
    assert status == 201, build
    done = until_sync(lambda: (b := server.get(f"/api/builds/{build['id']}"))["finished_at"]
                      and b, 600, f"build {build['id']} of {repo}")
    assert done["state"] == "passed", done
    return done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path, help="holds data/ from bench/fill.py")
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    root = args.root
    config = make_config(root, [
        {"name": "demo", "url": repo_at(root / "repo"), "script": "true"},
        {"name": "biglog", "url": repo_at(root / "biglog"), "script": BIG_LOG},
        {"name": "matrix", "url": repo_at(root / "matrix", {".asyncci.toml": MATRIX}),
         "script": ""},
    ], hosts=[{"name": "local", "type": "local", "slots": 2, "workdir": str(root / "work")}])
    server = ServerProcess(config).start()
    try:
        newest = server.get("/api/builds?limit=1&repo=demo")["builds"][0]["id"]
        big, matrix = built(server, "biglog"), built(server, "matrix")
        job = big["jobs"][0]["id"]
        size = len(server.get(f"/api/jobs/{job}/log"))
        print(f"build {big['id']}: a log of {size / 1e6:.1f} MB; build {matrix['id']}:"
              f" {len(matrix['jobs'])} jobs")
        pages = [("/", 2), ("/repos/demo", 2), (f"/builds/{newest // 2}", 2),
                 (f"/builds/{big['id']}", 2), (f"/builds/{matrix['id']}", 2),
                 (f"/builds/{big['id']}?job={job}&start=300000", 2),  # its middle
                 (f"/builds/{big['id']}?job={job}&q=needle", 1)]
        for path, connections in pages:
            rate, p50, p99 = wrk(server.url + path, args.seconds, connections)
            print(f"{path:<36} {rate:8.1f} req/s   p50 {p50:>8}   p99 {p99:>8}")
    finally:
        server.kill()


if __name__ == "__main__":
    main()
