"""One job writing 200 MB to stdout on an SSH host: bytes/s into the server's log against
`ssh host cmd > file` in the same run, and the server's peak RSS.
    .venv/bin/python bench/log_throughput.py [--mb 200]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throughput import peak_rss_mb  # noqa: E402
from tests.support.config import make_config  # noqa: E402
from tests.support.gitrepo import GitRepo  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402
from tests.support.sshd import Sshd  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--host-workdir", help="e.g. /dev/shm/x: the host's disk apart from"
                        " the server's, as with a real remote host")
    args = parser.parse_args()
    size = args.mb * 10**6
    # `|| true`: under the job's pipefail, yes(1) ending on SIGPIPE is not a failure
    command = (f"{{ yes 'a log line of a typical length, with some words in it: 0123456789'"
               f" || true; }} | head -c {size}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sshd = Sshd(root, "host").start()
        try:
            started = time.monotonic()
            with open(root / "reference.log", "wb") as out:
                subprocess.run(["ssh", "-i", str(sshd.client_key), "-p", str(sshd.port),
                                "-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "BatchMode=yes",
                                "root@127.0.0.1", command], stdout=out, check=True, timeout=300)
            reference_s = time.monotonic() - started
            assert (root / "reference.log").stat().st_size == size

            repo = GitRepo(root / "repo")
            repo.commit("bench")
            config = make_config(root, [{"name": "bench", "url": str(repo.path), "script": command}],
                                 hosts=[sshd.host("host", workdir=args.host_workdir or str(sshd.workdir))],
                                 server={"max_log_bytes": "10GB"})
            server = ServerProcess(config).start()
            try:
                assert server.proc is not None
                while server.get("/api/hosts")["hosts"][0]["state"] != "online":
                    time.sleep(0.1)
                started = time.monotonic()
                build = server.post("/api/repos/bench/builds")[1]
                while not server.get(f"/api/builds/{build['id']}")["finished_at"]:
                    time.sleep(0.05)
                server_s = time.monotonic() - started
                assert server.get(f"/api/builds/{build['id']}")["state"] == "passed"
                rss = peak_rss_mb(server.proc.pid)
                logged = (root / "data" / "logs" / f"{build['jobs'][0]['id']}.log").stat().st_size
            finally:
                server.kill()
            assert logged >= size
        finally:
            sshd.stop()
    print(f"ssh host cmd > file : {size / reference_s / 1e6:6.1f} MB/s ({reference_s:.1f} s)")
    print(f"asyncci job log     : {size / server_s / 1e6:6.1f} MB/s ({server_s:.1f} s, build start to passed)")
    print(f"ratio {reference_s / server_s:.2f}x of ssh; server peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
