"""The command line as users run it: exit statuses, messages, trigger and status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.server import TOKEN, ServerProcess
from tests.support.wait import until_sync

ROOT = Path(__file__).resolve().parent.parent


def asyncci(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncci.cli", *args], capture_output=True, text=True,
        timeout=60, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def test_check_reports_every_config_error_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nlisten = "nowhere"\n[[hosts]]\nname = "h"\nslots = "four"\n'
                   '[[repos]]\nname = "r"\nurl = "."\nscript = "true"\ncolour = "red"\n')
    result = asyncci("check", "-c", str(bad))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f'{bad}:server.listen: must be "host:port", got "nowhere"',
        f'{bad}:hosts[0].slots: must be a positive integer, got "four"',
        f"{bad}:repos[0].colour: unknown key",
    ]
    assert not (tmp_path / "asyncci-data").exists()  # nothing touched


def test_config_comes_from_the_environment_then_the_working_directory(tmp_path: Path) -> None:
    missing = asyncci("check", cwd=tmp_path)
    assert missing.returncode == 2 and "asyncci.toml: cannot read" in missing.stderr
    from_env = asyncci("check", env={"ASYNCCI_CONFIG": str(tmp_path / "x.toml")})
    assert from_env.returncode == 2 and "x.toml: cannot read" in from_env.stderr


def test_check_on_the_example_config_reaches_the_local_host() -> None:
    result = asyncci("check", "-c", "config.example.toml")
    assert result.returncode == 0, result.stderr
    assert "local: ok; git version" in result.stdout and "slots=2" in result.stdout


def test_trigger_and_status_talk_to_a_running_server(
    config_for: Callable[..., Path], tmp_path: Path
) -> None:
    config = config_for("sleep 0.5")
    server = ServerProcess(config).start()
    try:
        env = {"ASYNCCI_TOKEN": TOKEN}
        triggered = asyncci("trigger", "demo", "--ref", "main", "-c", str(config), env=env)
        assert triggered.returncode == 0, triggered.stderr
        assert triggered.stdout.startswith("build 1 queued demo refs/heads/main")
        status = asyncci("status", "--url", server.url, env=env)
        assert status.returncode == 0 and "local" in status.stdout and "RUNNING" in status.stdout
        refused = asyncci("trigger", "demo", "-c", str(config), env={"ASYNCCI_TOKEN": "wrong"})
        assert refused.returncode == 1 and "401" in refused.stderr
        unknown = asyncci("trigger", "nope", "-c", str(config), env=env)
        assert unknown.returncode == 1 and "404" in unknown.stderr
        until_sync(lambda: server.get("/api/builds/1")["state"] == "passed", 20, "build 1")
    finally:
        server.kill()
    down = asyncci("status", "--url", server.url)
    assert down.returncode == 1 and "cannot reach" in down.stderr


def test_sigterm_stops_the_server_promptly_and_leaves_the_job_running(
    config_for: Callable[..., Path]
) -> None:
    config = config_for("echo started; sleep 2; echo done")
    server = ServerProcess(config).start()
    try:
        server.post("/api/repos/demo/builds")
        until_sync(lambda: b"started" in server.get("/api/jobs/1/log"), 20, "the job to start")
        started = time.monotonic()
        assert server.kill(signal.SIGTERM) == 0
        assert time.monotonic() - started < 5
        server.start()  # the job went on meanwhile and is reattached
        until_sync(lambda: server.get("/api/builds/1")["state"] == "passed", 20, "passed")
        assert server.get("/api/builds/1")["jobs"][0]["attempt"] == 1
    finally:
        server.kill()
