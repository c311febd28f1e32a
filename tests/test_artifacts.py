"""Artifacts and test results: job.sh collects what a job's patterns name on its host, the
host fetches it to the server (a plain copy, or SFTP), and JUnit reports become outcomes.
Hosts are driven directly, with real jobs, a real git repo and a real sshd."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncci.config import load_config
from asyncci.hosts.base import Collected, Host, HostLost, JobRun, Outcome
from asyncci.hosts.local import LocalHost
from asyncci.hosts.results import parse_junit
from asyncci.hosts.ssh import SSHHost
from asyncci.hosts.wrapper import job_dir
from asyncci.logs import Logs
from asyncci.model import HostState
from asyncci.model.results import Artifact, TestOutcome, TestResult
from asyncci.server import KILL_GRACE_S
from tests.support.gitrepo import GitRepo
from tests.support.sshd import Sshd
from tests.support.wait import until

REPORT = b"""<?xml version="1.0" encoding="utf-8"?>
<testsuite name="pytest" tests="5" failures="1" errors="1" skipped="1">
  <testcase classname="tests.test_a" name="test_ok" time="0.25"/>
  <testcase classname="tests.test_a" name="test_bad" time="0.02">
    <failure message="assert 1 == 2">def test_bad():
&gt;       assert 1 == 2</failure>
  </testcase>
  <testcase classname="tests.test_a" name="test_broken">
    <error>Traceback (most recent call last):
RuntimeError: fixture exploded</error>
  </testcase>
  <testcase classname="tests.test_a" name="test_gpu">
    <skipped message="no GPU here" type="pytest.skip"/>
  </testcase>
  <testcase name="bare" time="nan"/>
  <testcase name="odd" time="soon"/>
</testsuite>
"""

SUITES = b"""<testsuites>
  <testsuite name="one"><testcase classname="a" name="x"/></testsuite>
  <testsuite name="two">
    <testcase classname="b" name="y"><failure>boom</failure></testcase>
  </testsuite>
</testsuites>
"""


async def test_junit_cases_become_outcomes() -> None:
    """A failure keeps its message and the text after it (pytest's traceback: where it
    failed); a case's `time` is its duration, 0 when it is no number of seconds."""
    results = await parse_junit(REPORT, 10**6)
    assert results == [
        TestResult("tests.test_a.test_ok", TestOutcome.PASSED),
        TestResult("tests.test_a.test_bad", TestOutcome.FAILED,
                   "assert 1 == 2\ndef test_bad():\n>       assert 1 == 2"),
        TestResult("tests.test_a.test_broken", TestOutcome.ERRORED,
                   "Traceback (most recent call last):\nRuntimeError: fixture exploded"),
        TestResult("tests.test_a.test_gpu", TestOutcome.SKIPPED, "no GPU here"),
        TestResult("bare", TestOutcome.PASSED),
        TestResult("odd", TestOutcome.PASSED),
    ]
    assert [t.duration for t in results] == [0.25, 0.02, 0.0, 0.0, 0.0, 0.0]


async def test_junit_cases_past_the_limit_are_not_read() -> None:
    assert [t.name for t in await parse_junit(REPORT, 2)] == [
        "tests.test_a.test_ok", "tests.test_a.test_bad"]


async def test_junit_testsuites_root_holds_every_suite() -> None:
    assert await parse_junit(SUITES, 10**6) == [TestResult("a.x", TestOutcome.PASSED),
                                   TestResult("b.y", TestOutcome.FAILED, "boom")]


async def test_junit_long_messages_are_cut() -> None:
    data = b"<testsuite><testcase name='t'><failure>%s</failure></testcase></testsuite>" % (
        b"x" * 10_000)
    assert len((await parse_junit(data, 10**6))[0].message) == 8000


@pytest.mark.parametrize("data", [
    b"<testsuite><testcase name='t'>",
    b"",
    b"<html><body>not a report</body></html>",
    b'<!DOCTYPE t [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    b'<testsuite><testcase name="&e;"/></testsuite>',
], ids=["truncated", "empty", "not-junit", "external-entity"])
async def test_junit_refuses_what_is_not_a_report(data: bytes) -> None:
    with pytest.raises(ValueError, match="^not a JUnit XML file: "):
        await parse_junit(data, 10**6)


def job(repo: GitRepo, script: str, artifacts: tuple[str, ...] = (), junit: tuple[str, ...] = (),
        cap: int = 10**8) -> JobRun:
    return JobRun(1, 1, "demo", str(repo.path), repo.head(), "refs/heads/main", 0, script,
                  artifacts=artifacts, junit=junit, artifact_cap=cap)


async def run_job(host: Host, run: JobRun, tmp_path: Path) -> str:
    """Run the attempt to its end; its log as the server stored it."""
    logs = Logs(tmp_path / "logs", 10**6)
    log = logs.open(run.job_id)
    outcome = await asyncio.wait_for(host.run(run, log, attach=False), 60)
    log.finish()
    assert outcome == Outcome(0), logs.read(run.job_id, 0)
    return logs.read(run.job_id, 0).decode()


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` by its relative path; symlinks fail the test."""
    found = {}
    for path in directory.rglob("*"):
        assert not path.is_symlink(), path
        if path.is_file():
            found[path.relative_to(directory).as_posix()] = path.read_bytes()
    return found


HOSTILE = """
mkdir -p out dist odd reports
head -c 200000 /dev/urandom >out/a.bin
printf wheel >dist/x.whl
printf dash >'odd/-rf my file'
printf subst >'odd/$(touch pwned)'
printf nl >'odd/new
line'
printf hidden >odd/.hidden
ln -s /etc/passwd passwd-link
ln -s /etc etc-link
ln -s out/a.bin inside-link
ln -s /nowhere odd/broken
printf secret >../secret
cp "$REPORT" reports/unit.xml
printf '<testsuite><testcase' >reports/broken.xml
printf 'the last line has no newline'
"""


async def test_local_host_collects_what_the_patterns_name_and_refuses_the_rest(
    config_for: Callable[..., Path], repo: GitRepo, tmp_path: Path
) -> None:
    (tmp_path / "report.xml").write_bytes(REPORT)
    host = LocalHost(load_config(config_for()).hosts[0], KILL_GRACE_S)
    run = job(repo, f"REPORT={tmp_path / 'report.xml'}\n{HOSTILE}",
              artifacts=("out/*", "dist/*.whl", "odd", "*-link", "../secret", "/etc/passwd",
                         "missing/*", "etc-link/passwd"),
              junit=("reports/*.xml",))
    log = await run_job(host, run, tmp_path)
    dest = tmp_path / "data" / "artifacts" / "1"
    collected = await host.collect(run, dest)

    workspace = Path(load_config(config_for()).hosts[0].workdir) / "ws" / "demo" / "0"
    names = ["dist/x.whl", "inside-link", "odd/$(touch pwned)", "odd/-rf my file",
             "odd/.hidden", "odd/new\nline", "out/a.bin"]
    assert tree(dest) == {n: (workspace / n).read_bytes() for n in names}
    assert collected.artifacts == [Artifact(n, (workspace / n).stat().st_size) for n in names]
    assert collected.tests == await parse_junit(REPORT, 10**6)
    [error] = collected.errors
    assert error.startswith("reports/broken.xml: not a JUnit XML file: ")
    assert "the last line has no newline\n[asyncci] " in log
    for note in ['artifact "../secret" refused: it leaves the workspace',
                 'artifact "/etc/passwd" refused: it leaves the workspace',
                 'artifact "passwd-link" refused: it leaves the workspace',
                 'artifact "etc-link" refused: it leaves the workspace',
                 'artifact "etc-link/passwd" refused: it leaves the workspace',
                 'artifact "missing/*" matched no files']:
        assert f"\n[asyncci] {note}\n" in log
    assert b"secret" not in tree(dest).values()
    assert not list(tmp_path.rglob("pwned"))  # the name stayed a name
    assert await host.collect(run, dest) == collected  # again, after a restart: the same


@pytest.mark.parametrize("patterns", [{}, {"artifacts": ("out",), "junit": ("out/a",), "cap": 0}],
                         ids=["no-patterns", "no-cap"])
async def test_nothing_to_collect_costs_nothing(
    config_for: Callable[..., Path], repo: GitRepo, tmp_path: Path, patterns: dict[str, Any]
) -> None:
    host = LocalHost(load_config(config_for()).hosts[0], KILL_GRACE_S)
    run = job(repo, "mkdir out && echo x >out/a", **patterns)
    log = await run_job(host, run, tmp_path)
    assert "[asyncci]" not in log
    jobdir = Path(load_config(config_for()).hosts[0].workdir) / job_dir(run)
    assert not (jobdir / "artifacts").exists()
    assert await host.collect(run, tmp_path / "dest") == Collected([], [], [])
    assert not (tmp_path / "dest").exists()


def sshd_with(tmp_path: Path, sftp: bool) -> Iterator[Sshd]:
    sshd = Sshd(tmp_path, "sftp-host" if sftp else "no-sftp-host")
    lines = [x for x in sshd.config.read_text().splitlines() if not x.startswith("Subsystem")]
    sshd.config.write_text("\n".join(lines + ["Subsystem sftp internal-sftp"] * sftp) + "\n")
    try:
        yield sshd.start()
    finally:
        sshd.stop()


@pytest.fixture
def sftp_sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A real sshd that serves SFTP too, as the stock sshd_config of hosts does."""
    yield from sshd_with(tmp_path, sftp=True)


@pytest.fixture
def no_sftp_sshd(tmp_path: Path) -> Iterator[Sshd]:
    yield from sshd_with(tmp_path, sftp=False)


@contextlib.asynccontextmanager
async def online(host: SSHHost) -> AsyncIterator[SSHHost]:
    task = asyncio.create_task(host.maintain())
    try:
        await until(lambda: host.state is HostState.ONLINE, 20, f"host {host.name} online")
        yield host
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_ssh_host_downloads_artifacts_over_sftp_within_the_cap(
    config_for: Callable[..., Path], repo: GitRepo, sftp_sshd: Sshd, tmp_path: Path
) -> None:
    (tmp_path / "report.xml").write_bytes(REPORT)
    config = load_config(config_for(hosts=[sftp_sshd.host("a", grace="1s")])).hosts[0]
    script = (f"cp {tmp_path / 'report.xml'} report.xml\n"
              "head -c 3000000 /dev/urandom >big.bin\n"
              "head -c 2000000 /dev/urandom >bigger.bin\n"
              "echo small >small.txt\n")
    run = job(repo, script, artifacts=("big.bin", "bigger.bin", "small.txt"),
              junit=("report.xml",), cap=4 * 10**6)
    dest = tmp_path / "data" / "artifacts" / "1"
    async with online(SSHHost(config, KILL_GRACE_S)) as host:
        log = await run_job(host, run, tmp_path)
        jobdir = Path(config.workdir) / job_dir(run)
        # What a process that outlived its job could leave there: refused on the server.
        (jobdir / "artifacts" / "stray").symlink_to("/etc/passwd")
        collected = await asyncio.wait_for(host.collect(run, dest), 30)

    workspace = Path(config.workdir) / "ws" / "demo" / "0"
    assert tree(dest) == {n: (workspace / n).read_bytes() for n in ("big.bin", "small.txt")}
    assert [a.path for a in collected.artifacts] == ["big.bin", "small.txt"]
    assert collected.tests == await parse_junit(REPORT, 10**6)
    assert collected.errors == ["stray: refused: a symbolic link"]
    assert log.splitlines() == [
        '[asyncci] artifact "bigger.bin" skipped: over the cap of 4000000 bytes']


async def test_ssh_host_gone_when_collecting_is_lost(
    config_for: Callable[..., Path], repo: GitRepo, sftp_sshd: Sshd, tmp_path: Path
) -> None:
    config = load_config(config_for(hosts=[sftp_sshd.host("a", grace="1s")])).hosts[0]
    run = job(repo, "echo x >a", artifacts=("a",))
    async with online(SSHHost(config, KILL_GRACE_S)) as host:
        await run_job(host, run, tmp_path)
        sftp_sshd.stop()
        await until(lambda: host.state is HostState.OFFLINE, 20, "host offline")
        with pytest.raises(HostLost, match="unreachable"):
            await asyncio.wait_for(host.collect(run, tmp_path / "dest"), 20)
    assert (Path(config.workdir) / job_dir(run) / "artifacts" / "a").exists()  # left on the host


async def test_ssh_host_without_sftp_says_so(
    config_for: Callable[..., Path], repo: GitRepo, no_sftp_sshd: Sshd, tmp_path: Path
) -> None:
    config = load_config(config_for(hosts=[no_sftp_sshd.host("a")])).hosts[0]
    run = job(repo, "echo x >a", artifacts=("a",))
    async with online(SSHHost(config, KILL_GRACE_S)) as host:
        await run_job(host, run, tmp_path)
        with pytest.raises(HostLost, match="`Subsystem sftp` line in its sshd_config"):
            await asyncio.wait_for(host.collect(run, tmp_path / "dest"), 20)
        assert host.state is HostState.ONLINE  # only SFTP is missing: jobs still run there


async def test_a_file_that_grows_while_it_is_copied_stays_within_the_cap(tmp_path: Path) -> None:
    """A process that outlived its job may still write to a collected file."""
    from asyncci.hosts.collection import collect_files
    from asyncci.hosts.local import _LocalFiles

    class Growing(_LocalFiles):
        async def copy(self, path: str, target: Path, limit: int) -> int:
            if path.endswith("log.txt"):
                with (tmp_path / "job" / path).open("ab") as f:
                    f.write(b"x" * 10_000)
            return await super().copy(path, target, limit)

    (tmp_path / "job" / "artifacts").mkdir(parents=True)
    (tmp_path / "job" / "artifacts" / "log.txt").write_bytes(b"start\n")
    (tmp_path / "job" / "artifacts" / "small.txt").write_bytes(b"ok\n")
    collected = await collect_files(Growing(tmp_path / "job"), tmp_path / "dest", 1000)
    assert collected.artifacts == [Artifact("small.txt", 3)]
    assert collected.errors == ["log.txt: not kept: it grew past the 1000 bytes cap per job"
                                " while it was copied"]
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["small.txt"]
