"""Seconds from a host going away to /api/hosts showing it offline, default settings.

Two ways to lose a host: its sshd and sessions killed (the kernel resets the TCP
connection), and its sshd and sessions frozen with SIGSTOP (no answer at all, as when a
machine hangs or a cable is pulled: only keepalives can tell).
    .venv/bin/python bench/lost_host.py
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.config import make_config  # noqa: E402
from tests.support.gitrepo import GitRepo  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402
from tests.support.sshd import Sshd  # noqa: E402


def seconds_to_offline(server: ServerProcess) -> float:
    started = time.monotonic()
    while server.get("/api/hosts")["hosts"][0]["state"] != "offline":
        assert time.monotonic() - started < 120, "host never went offline"
        time.sleep(0.02)
    return time.monotonic() - started


def wait_online(server: ServerProcess) -> None:
    deadline = time.monotonic() + 90
    while server.get("/api/hosts")["hosts"][0]["state"] != "online":
        assert time.monotonic() < deadline, "host never came online"
        time.sleep(0.05)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sshd = Sshd(root, "host").start()
        repo = GitRepo(root / "repo")
        repo.commit("bench")
        config = make_config(root, [{"name": "r", "url": str(repo.path), "script": "true"}],
                             hosts=[sshd.host("host")])
        server = ServerProcess(config).start()
        try:
            wait_online(server)
            sshd.stop()
            killed = seconds_to_offline(server)
            sshd.start()
            wait_online(server)
            assert sshd.proc is not None
            frozen_pids = [sshd.proc.pid, *sshd.sessions()]
            for pid in frozen_pids:
                os.kill(pid, signal.SIGSTOP)
            frozen = seconds_to_offline(server)
            for pid in frozen_pids:
                os.kill(pid, signal.SIGCONT)
        finally:
            server.kill()
            sshd.stop()
    print(f"lost host, sshd and sessions killed: offline after {killed:.2f} s")
    print(f"lost host, sshd and sessions frozen: offline after {frozen:.2f} s")


if __name__ == "__main__":
    main()
