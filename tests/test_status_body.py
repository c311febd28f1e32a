"""What one outbox row tells GitHub (SPEC §7), decided by `status_body` alone: the
end-to-end tests in test_github.py show that it is sent, in order, after any crash."""

from __future__ import annotations

import pytest

from asyncci.model import Job, JobSpec, JobState, OutboxItem
from asyncci.model.results import TestOutcome, TestReport, TestResult
from asyncci.reporters.github import status_body

URL = "https://ci.example.com/"


def row(state: JobState, detail: str | None) -> OutboxItem:
    job = Job(11, 4, "test (python=3.12)", state, JobSpec("test (python=3.12)", "make"))
    return OutboxItem(1, job, "octo/demo", "a" * 40, state, detail)


@pytest.mark.parametrize("state, detail, github, description", [
    (JobState.QUEUED, "position 3, waiting for a free slot", "pending",
     "queued: position 3, waiting for a free slot"),
    (JobState.QUEUED, None, "pending", "queued"),
    (JobState.RUNNING, "b1", "pending", "running on b1"),
    (JobState.PASSED, None, "success", "passed"),
    (JobState.FAILED, "exit code 2", "failure", "failed: exit code 2"),
    (JobState.FAILED, "timed out after 5m", "failure", "failed: timed out after 5m"),
    (JobState.ERRORED, "host b1 unreachable", "error", "errored: host b1 unreachable"),
    (JobState.CANCELLED, "superseded by a newer build", "error",
     "cancelled: superseded by a newer build"),
])
def test_each_state_as_github_reads_it(state: JobState, detail: str | None, github: str,
                                       description: str) -> None:
    assert status_body(row(state, detail), URL) == {
        "state": github, "context": "asyncci/test (python=3.12)",
        "target_url": "https://ci.example.com/builds/4", "description": description}


def test_a_description_is_cut_to_githubs_140_characters() -> None:
    body = status_body(row(JobState.FAILED, "x" * 500), URL)
    assert len(body["description"]) == 140 and body["description"].startswith("failed: xxx")


def report(now: dict[str, TestOutcome], base: dict[str, TestOutcome]) -> TestReport:
    return TestReport.compare([TestResult(n, o) for n, o in now.items()], "refs/heads/main", 3,
                              [TestResult(n, o) for n, o in base.items()])


def test_failing_tests_say_what_changed_against_the_base_branch() -> None:
    tests = report({"a": TestOutcome.FAILED, "b": TestOutcome.FAILED, "c": TestOutcome.PASSED},
                   {"a": TestOutcome.FAILED, "c": TestOutcome.FAILED})
    body = status_body(row(JobState.FAILED, "exit code 1"), URL, tests)
    assert (body["state"], body["description"]) == (
        "failure", "1 new failure (b), 1 fixed (c), 1 still failing (a)")


def test_a_run_with_every_test_passing_says_its_state() -> None:
    tests = report({"a": TestOutcome.PASSED}, {"a": TestOutcome.PASSED})
    assert status_body(row(JobState.PASSED, None), URL, tests)["description"] == "passed"
