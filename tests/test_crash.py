"""SIGKILL the server while a local job runs: nothing is lost, nothing doubled."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.server import ServerProcess
from tests.support.wait import until_sync


def log_of(server: ServerProcess, job_id: int) -> bytes:
    data = server.get(f"/api/jobs/{job_id}/log")
    assert isinstance(data, bytes)
    return data


def finished(server: ServerProcess, build_id: int) -> Any:
    build = server.get(f"/api/builds/{build_id}")
    return build if build["finished_at"] else None


def test_sigkill_mid_job_reattaches_with_the_complete_log(config_for: Callable[..., Path]) -> None:
    script = 'for i in $(seq 1 60); do echo "line $i"; sleep 0.05; done'
    server = ServerProcess(config_for(script)).start()
    try:
        status, build = server.post("/api/repos/demo/builds")
        assert status == 201, build
        job_id = build["jobs"][0]["id"]
        until_sync(lambda: b"line 10\n" in log_of(server, job_id), 20, "line 10")
        assert server.kill() == -signal.SIGKILL
        server.start()
        done = until_sync(lambda: finished(server, build["id"]), 30, "the build to finish")
        log = log_of(server, job_id).decode()
    finally:
        server.kill()
    assert done["state"] == "passed", done
    assert done["jobs"][0]["attempt"] == 1  # reattached, not re-run
    assert [line for line in log.splitlines() if line.startswith("line ")] == [
        f"line {i}" for i in range(1, 61)]


def test_job_gone_without_exit_status_is_requeued(
    config_for: Callable[..., Path], tmp_path: Path
) -> None:
    script = 'echo "attempt $ASYNCCI_ATTEMPT"; if [ "$ASYNCCI_ATTEMPT" = 1 ]; then sleep 300; fi'
    server = ServerProcess(config_for(script)).start()
    try:
        build = server.post("/api/repos/demo/builds")[1]
        job_id = build["jobs"][0]["id"]
        until_sync(lambda: b"\nattempt 1\n" in log_of(server, job_id), 20, "attempt 1")
        server.kill()
        # The host "reboots": the job and its supervisor die, leaving no exit status.
        job_dir = tmp_path / "work" / "jobs" / f"{job_id}-1"
        os.kill(int((job_dir / "sup.pid").read_text()), signal.SIGKILL)
        os.killpg(int((job_dir / "job.pid").read_text()), signal.SIGKILL)
        server.start()
        done = until_sync(lambda: finished(server, build["id"]), 30, "the build to finish")
        log = log_of(server, job_id).decode()
    finally:
        server.kill()
    job = done["jobs"][0]
    assert (done["state"], job["attempt"]) == ("passed", 2), done
    assert job["attempts"][0]["outcome"] == "requeued"
    assert "without an exit status" in job["attempts"][0]["reason"]
    assert "attempt 1" in log and "attempt 2" in log
