"""The scheduler's decisions beside `verdict` (tested in test_scheduler.py): what a job's
environment holds, what it needs of a host, and how asyncci speaks of it in its log."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncci.config import Config, load_config
from asyncci.model import Approval, BuildHead, Event, Job, JobSpec, JobState
from asyncci.scheduler.decisions import duration, job_env, job_run, needs, start_note
from tests.support.config import make_config

SHA = "c" * 40


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("DEPLOY_KEY", "s3cret-value")
    return load_config(make_config(
        tmp_path,
        [{"name": "demo", "url": "https://example.com/demo.git", "env": {"MODE": "ci"},
          "secrets": {"DEPLOY_KEY": {"env": "DEPLOY_KEY"}}}],
        hosts=[{"name": "b1", "type": "local", "slots": 2, "workdir": str(tmp_path / "w"),
                "slot_env": {"PORT": "80{slot}", "MODE": "host"}}]))


def head(untrusted: bool = False, approval: Approval | None = None, pr: int | None = None
         ) -> BuildHead:
    ref = f"refs/pull/{pr}/head" if pr else "refs/heads/main"
    return BuildHead(5, "demo", ref, SHA, Event.PULL_REQUEST if pr else Event.PUSH, pr,
                     untrusted, approval)


def job(spec: JobSpec | None = None) -> Job:
    return Job(9, 5, "test", JobState.RUNNING, spec or JobSpec("test", "make", env={"X": "1"}),
               host="b1", slot=1, attempt=2)


def test_a_trusted_jobs_environment_in_specs_order(config: Config) -> None:
    env = job_env(head(), job(), config.hosts[0], config.repos[0])
    assert {k: v for k, v in env.items() if k.startswith("ASYNCCI_")} == {
        "ASYNCCI_BUILD_ID": "5", "ASYNCCI_JOB_ID": "9", "ASYNCCI_REPO": "demo",
        "ASYNCCI_SHA": SHA, "ASYNCCI_REF": "refs/heads/main", "ASYNCCI_BRANCH": "main",
        "ASYNCCI_PR": "", "ASYNCCI_EVENT": "push", "ASYNCCI_HOST": "b1", "ASYNCCI_SLOT": "1",
        "ASYNCCI_ATTEMPT": "2"}
    assert (env["CI"], env["X"], env["PORT"], env["DEPLOY_KEY"]) == (
        "true", "1", "801", "s3cret-value")
    assert env["MODE"] == "host"  # the host's slot_env comes after the repo's env


def test_an_untrusted_build_gets_no_secrets(config: Config) -> None:
    env = job_env(head(untrusted=True, pr=4), job(), config.hosts[0], config.repos[0])
    assert "DEPLOY_KEY" not in env and "s3cret-value" not in env.values()
    assert (env["ASYNCCI_PR"], env["ASYNCCI_BRANCH"]) == ("4", "")


def test_the_run_a_host_is_given_carries_the_job_and_its_confinement(config: Config) -> None:
    run = job_run(head(untrusted=True), job(), config.hosts[0], config.repos[0], 1000)
    assert (run.job_id, run.attempt, run.slot, run.sha, run.script, run.untrusted) == (
        9, 2, 1, SHA, "make", True)
    assert run.confinement == "sandbox" and run.artifact_cap == 1000


@pytest.mark.parametrize("build, spec, wanted", [
    (head(), JobSpec("t", "make"), set()),
    (head(), JobSpec("t", "make", isolation="all"), {"asyncci:sandbox"}),
    (head(), JobSpec("t", "make", image="debian"), {"asyncci:container"}),
    (head(untrusted=True), JobSpec("t", "make"), {"asyncci:sandbox", "asyncci:untrusted"}),
    (head(untrusted=True), JobSpec("t", "make", image="debian"),
     {"asyncci:container", "asyncci:untrusted"}),
    (head(untrusted=True, approval=Approval.WAITING), JobSpec("t", "make"),
     {"asyncci:sandbox", "asyncci:untrusted", "asyncci:approved"}),
    (head(untrusted=True, approval=Approval.APPROVED), JobSpec("t", "make"),
     {"asyncci:sandbox", "asyncci:untrusted"}),
])
def test_what_a_job_needs_of_its_host(build: BuildHead, spec: JobSpec, wanted: set[str]
                                      ) -> None:
    assert needs(build, spec) == wanted


@pytest.mark.parametrize("seconds, spelled", [
    (300, "5m"), (3600, "1h"), (5400, "90m"), (90, "90s"), (2.5, "2.5s"), (7200, "2h")])
def test_a_timeout_is_spelled_as_in_the_config(seconds: float, spelled: str) -> None:
    assert duration(seconds) == spelled


def test_the_first_line_of_an_attempt_says_where_and_how_it_runs(config: Config) -> None:
    untrusted = head(untrusted=True)
    spec = JobSpec("test", "make", image="debian:bookworm")
    run = job_run(untrusted, job(spec), config.hosts[0], config.repos[0], 0)
    assert start_note(untrusted, job(spec), "b1", run) == (
        f"[asyncci] attempt 2 on b1 slot 1 at {SHA}, in a container of debian:bookworm"
        " (untrusted: no secrets)")
