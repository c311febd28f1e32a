"""The command line as users run it: exit statuses, messages, check, trigger and status."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asyncci.cli import DEFAULT_URL, log_lines, parser
from tests.support.config import make_config
from tests.support.gitrepo import GitRepo
from tests.support.server import TOKEN, ServerProcess
from tests.support.wait import until_sync

ROOT = Path(__file__).resolve().parent.parent
# No config from the environment of whoever runs the tests: "" falls through to ./asyncci.toml.
CLEAN = {"PYTHONPATH": str(ROOT), "ASYNCCI_CONFIG": "", "ASYNCCI_TOKEN": ""}
PIPELINE = """\
[[jobs]]
name = "one"
script = "echo from-one; printf '10%%\\r50%%\\r100%%\\n'"
[[jobs]]
name = "second"
script = "echo from-second; exit 3"
"""


def asyncci(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncci.cli", *args], capture_output=True, text=True,
        timeout=60, cwd=cwd, env={**os.environ, **CLEAN, **(env or {})},
    )


def following(config: Path, out: Path, *args: str) -> subprocess.Popen[bytes]:
    """`asyncci trigger demo --wait` in the background, its stdout in `out`."""
    with out.open("wb") as stdout:
        return subprocess.Popen(
            [sys.executable, "-m", "asyncci.cli", "trigger", "demo", "--wait", "-c", str(config),
             *args], stdout=stdout, stderr=subprocess.PIPE,
            env={**os.environ, **CLEAN, "ASYNCCI_TOKEN": TOKEN})


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


def test_help_describes_every_command_and_option() -> None:
    top = parser()
    (commands,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == {"serve", "check", "trigger", "status"}
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.dest} has no help"
    shown = asyncci("--help")
    assert shown.returncode == 0
    for word in ("serve", "check", "trigger", "status", "ASYNCCI_CONFIG", "ASYNCCI_TOKEN"):
        assert word in shown.stdout
    wait = asyncci("trigger", "--help").stdout
    assert "--wait" in wait and "--sha SHA" in wait and DEFAULT_URL in wait


def test_log_lines_keep_unfinished_lines_and_show_redrawn_ones_as_they_ended() -> None:
    lines, rest = log_lines(b"", b"one\ntw", final=False)
    assert (lines, rest) == (["one"], b"tw")
    lines, rest = log_lines(rest, "o\r\n10%\r99%\rdone \xe2\x9c\x94\n".encode("latin-1"), False)
    assert (lines, rest) == (["two", "done ✔"], b"")
    assert log_lines(b"", b"no newline at the end", final=True) == (["no newline at the end"], b"")


def test_trigger_wait_follows_every_job_and_exits_with_the_build_result(
    config_for: Callable[..., Path], repo: GitRepo
) -> None:
    repo.branch("plain")
    repo.commit("a pipeline", files={".asyncci.toml": PIPELINE})
    config = config_for("echo hello; echo world", branches=["main", "plain"])
    server = ServerProcess(config).start()
    try:
        env = {"ASYNCCI_TOKEN": TOKEN}
        single = asyncci("trigger", "demo", "--ref", "plain", "--wait", "-c", str(config), env=env)
        assert single.returncode == 0, single.stderr
        lines = single.stdout.splitlines()
        assert lines[0].startswith("build 1 queued demo refs/heads/plain")
        assert lines[-4:-2] == ["hello", "world"]  # one job: no prefix
        assert lines[-2].startswith("job build: passed after ") and lines[-2].endswith("on local")
        assert lines[-1] == f"build 1 passed  {server.url}/builds/1"

        several = asyncci("trigger", "demo", "--wait", "-c", str(config), env=env)
        assert several.returncode == 1, several.stderr
        lines = several.stdout.splitlines()
        assert "one    | from-one" in lines and "second | from-second" in lines
        assert "one    | 100%" in lines  # a redrawn line as it ended
        assert any(line.startswith("job one: passed after ") for line in lines)
        assert any(line.startswith("job second: failed after ") and
                   line.endswith(": exit code 3") for line in lines)
        assert lines[-1] == f"build 2 failed  {server.url}/builds/2"
    finally:
        server.kill()


@pytest.mark.parametrize("interruption", ["ctrl-c", "server-gone"])
def test_following_stops_and_the_build_goes_on(
    config_for: Callable[..., Path], tmp_path: Path, interruption: str
) -> None:
    """Ctrl-C stops following (130) without cancelling the build; a server that goes away
    is an exit 1 with a message, and its job goes on to be reattached."""
    config = config_for("echo started; sleep 2; echo done")
    server = ServerProcess(config).start()
    try:
        out = tmp_path / "out"
        follower = following(config, out)
        until_sync(lambda: b"started" in out.read_bytes(), 20, "the follower to print the log")
        if interruption == "ctrl-c":
            follower.send_signal(signal.SIGINT)
        else:
            server.kill()
        error = follower.communicate(timeout=30)[1].decode()
        if interruption == "ctrl-c":
            assert follower.returncode == 130 and f"build 1 goes on: {server.url}/builds/1" in error
        else:
            assert follower.returncode == 1
            assert f"cannot reach {server.url}" in error and "while following build 1" in error
            server.start()
        until_sync(lambda: server.get("/api/builds/1")["state"] == "passed", 20, "passed")
        assert server.get("/api/jobs/1/log").endswith(b"done\n")  # never cancelled
    finally:
        server.kill()


def test_status_shows_the_queue_total_and_recent_builds_without_being_told_the_url(
    config_for: Callable[..., Path], tmp_path: Path
) -> None:
    config = config_for("true", labels=["gpu"])  # no host has it: every job stays queued
    server = ServerProcess(config).start()
    try:
        for _ in range(22):
            assert server.post("/api/repos/demo/builds")[0] == 201
        status = asyncci("status", cwd=config.parent)  # ./asyncci.toml names the server
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert lines[0] == f"asyncci at {server.url}" and "QUEUE (22)" in lines
        assert "  … and 2 more" in lines
        recent = lines[lines.index("RECENT BUILDS") + 1:]
        assert [line.split()[1] for line in recent] == [str(n) for n in range(22, 12, -1)]
        assert recent[0].endswith(f"manual  {server.url}/builds/22") and "queued" in recent[0]
        from_env = asyncci("status", env={"ASYNCCI_CONFIG": str(config)})
        assert from_env.returncode == 0 and from_env.stdout.startswith(lines[0])
    finally:
        server.kill()


def test_trigger_and_status_need_no_config_file_but_refuse_a_broken_one(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    status = asyncci("status", cwd=empty)  # whether or not a server listens there
    assert DEFAULT_URL in status.stdout + status.stderr and status.returncode in (0, 1)
    trigger = asyncci("trigger", "demo", "--url", "http://127.0.0.1:9", cwd=empty)
    assert trigger.returncode == 1 and "cannot reach http://127.0.0.1:9" in trigger.stderr
    named = asyncci("status", "-c", "missing.toml", cwd=empty)
    assert named.returncode == 2 and "missing.toml: cannot read" in named.stderr
    (empty / "asyncci.toml").write_text('[server]\nlisten = "nowhere"\n')
    broken = asyncci("trigger", "demo", cwd=empty)
    assert broken.returncode == 2
    assert broken.stderr == 'asyncci.toml:server.listen: must be "host:port", got "nowhere"\n'


def test_check_reaches_every_repo_and_names_labels_no_host_has(
    tmp_path: Path, repo: GitRepo
) -> None:
    hosts = [{"name": label, "type": "local", "slots": 1, "labels": [label],
              "workdir": str(tmp_path / label)} for label in ("linux", "arm64")]
    needs = {"fine": ["linux"], "gone": [], "gpu": ["gpu", "linux"], "both": ["arm64", "linux"]}
    repos: list[dict[str, Any]] = [
        {"name": name, "url": str(tmp_path / "missing" if name == "gone" else repo.path),
         "script": "true", "labels": labels} for name, labels in needs.items()]
    check = asyncci("check", "-c", str(make_config(tmp_path, repos, hosts=hosts)))
    assert check.returncode == 1
    lines = [line for line in check.stdout.splitlines() if line.startswith("repo ")]
    assert lines[0] == "repo fine: ok; 1 branch(es)"
    assert lines[1].startswith(f"repo gone: FAILED: git ls-remote: fatal: '{tmp_path}/missing'"
                               " does not appear to be a git repository")
    assert lines[2:] == [
        "repo gpu: ok; 1 branch(es)",
        "repo gpu: FAILED: its jobs need label(s) [gpu] that no host has: they would stay"
        " queued forever (give a host those labels, or take them off the repo)",
        "repo both: ok; 1 branch(es)",
        "repo both: FAILED: its jobs need labels [arm64, linux] that no one host has together:"
        " they would stay queued forever (give a host those labels, or take them off the repo)",
    ]
