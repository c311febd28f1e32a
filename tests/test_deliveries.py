"""What a GitHub delivery asks for, decided by `parse_delivery` alone: the end-to-end
tests in test_github.py show that the answer is acted on."""

from __future__ import annotations

import json
from typing import Any

import pytest

from asyncci.web.hooks import PullRequest, Push, parse_delivery
from tests.support.github import payload

SHA = "a" * 40


def push(**replace: str) -> dict[str, Any]:
    fields = {"branch": "main", "sha": SHA, "message": "fix it", "repository": "octo/demo"}
    return dict(json.loads(payload("push", **{**fields, **replace})))


def pull(action: str = "opened", head: str = "someone/demo", **replace: str) -> dict[str, Any]:
    fields = {"action": action, "number": "7", "sha": SHA, "repository": "octo/demo",
              "head_repository": head, "association": "CONTRIBUTOR"}
    return dict(json.loads(payload("pull_request", **{**fields, **replace})))


def test_a_push_to_a_branch_asks_for_its_head() -> None:
    assert parse_delivery("push", push(branch="feature/x")) == Push(
        "octo/demo", "feature/x", SHA, "fix it", "Ada Tester <ada@example.org>")


@pytest.mark.parametrize("change", [
    {"ref": "refs/tags/v1"},
    {"deleted": True},
    {"after": "0" * 40},
])
def test_tags_and_deletions_ask_for_nothing(change: dict[str, Any]) -> None:
    assert parse_delivery("push", {**push(), **change}) is None


def test_a_push_without_a_head_commit_has_no_message_or_author() -> None:
    assert parse_delivery("push", {**push(), "head_commit": None}) == Push(
        "octo/demo", "main", SHA, "", "")


@pytest.mark.parametrize("action", ["opened", "synchronize", "reopened"])
def test_a_pull_request_from_a_fork_is_marked_as_one(action: str) -> None:
    assert parse_delivery("pull_request", pull(action)) == PullRequest(
        "octo/demo", 7, SHA, base="main", fork=True, closed=False, association="CONTRIBUTOR")


def test_a_pull_request_from_the_same_repository_is_no_fork() -> None:
    asked = parse_delivery("pull_request", pull(head="octo/demo"))
    assert isinstance(asked, PullRequest) and not asked.fork


def test_a_deleted_head_repository_counts_as_a_fork() -> None:
    body = pull()
    body["pull_request"]["head"]["repo"] = None
    asked = parse_delivery("pull_request", body)
    assert isinstance(asked, PullRequest) and asked.fork


def test_closing_a_pull_request_is_told_so_that_its_builds_stop() -> None:
    asked = parse_delivery("pull_request", pull("closed"))
    assert isinstance(asked, PullRequest) and asked.closed


@pytest.mark.parametrize("event, body", [
    ("pull_request", pull("labeled")),
    ("ping", {"zen": "hi", "repository": {"full_name": "octo/demo"}}),
    ("issues", push()),
])
def test_other_actions_and_events_ask_for_nothing(event: str, body: dict[str, Any]) -> None:
    assert parse_delivery(event, body) is None


@pytest.mark.parametrize("event, body", [
    ("push", {"ref": "refs/heads/main"}),
    ("push", {**push(), "repository": "octo/demo"}),
    ("pull_request", {**pull(), "number": "seven"}),
    ("pull_request", {**pull(), "pull_request": []}),
])
def test_a_malformed_payload_is_refused_with_what_is_wrong(event: str, body: dict[str, Any]
                                                           ) -> None:
    with pytest.raises(ValueError, match=f"malformed {event} payload"):
        parse_delivery(event, body)
