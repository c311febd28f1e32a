"""refs.py: what git names. Branch names and refs come from anyone who can push or open a
pull request, so hostile ones are part of the grammar tested here."""

from __future__ import annotations

import time

import pytest

from asyncci.refs import (
    Commit, branch_matches, branch_of, branch_ref, full_ref, is_pull_ref, pull_ref,
)


@pytest.mark.parametrize("name, ref", [
    ("main", "refs/heads/main"), ("feature/x", "refs/heads/feature/x"),
    ("refs/heads/main", "refs/heads/main"), ("refs/tags/v1", "refs/tags/v1"),
    ("refs/pull/7/head", "refs/pull/7/head"),
    ("refsx", "refs/heads/refsx"), ("-x", "refs/heads/-x"), ("../x", "refs/heads/../x"),
])
def test_full_ref(name: str, ref: str) -> None:
    """A person's `main` is the branch; a full ref is left alone, and checking that git
    would take the name is mirror.py's (which puts `--` before it)."""
    assert full_ref(name) == ref


@pytest.mark.parametrize("ref, branch", [
    ("refs/heads/main", "main"), ("refs/heads/a/b", "a/b"),
    ("refs/heads/refs/heads/x", "refs/heads/x"),  # a branch named like a ref
    ("refs/heads/", None), ("refs/headsmain", None), ("refs/tags/v1", None),
    ("refs/pull/1/head", None), ("main", None), ("", None), ("REFS/HEADS/main", None),
    (" refs/heads/main", None),
])
def test_branch_of(ref: str, branch: str | None) -> None:
    assert branch_of(ref) == branch


@pytest.mark.parametrize("branch", ["main", "a/b", "refs/x", "refs/heads/x", "ünï", "-n"])
def test_a_branch_ref_names_that_branch_whatever_its_name(branch: str) -> None:
    assert branch_of(branch_ref(branch)) == branch


def test_pull_refs() -> None:
    assert pull_ref(12) == "refs/pull/12/head" and is_pull_ref(pull_ref(12))
    assert branch_of(pull_ref(12)) is None
    assert not is_pull_ref("refs/heads/refs/pull/1/head")  # a branch, named to look like one
    assert not is_pull_ref("refs/pullx") and not is_pull_ref("")


@pytest.mark.parametrize("pattern, branch, matches", [
    ("release/*", "release/1.0", True), ("release/*", "release/1/2", False),
    ("release/**", "release/1/2", True), ("**", "a/b/c", True), ("**/fix", "a/b/fix", True),
    ("main", "main", True), ("main", "main2", False), ("main", "xmain", False),
    ("v?", "v1", True), ("v?", "v/", False), ("v?", "v10", False), ("*", "a/b", False),
    ("feat-*", "feat-x", True), ("a*b*c", "aXbYc", True), ("a*b*c", "aXbY/c", False),
    ("*", "", True), ("**", "", True), ("", "", True), ("", "x", False), ("?", "", False),
    ("***", "a/b", True), ("*/**", "a", False), ("**/*", "a/b/c", True),
])
def test_branch_globs(pattern: str, branch: str, matches: bool) -> None:
    assert branch_matches([pattern], branch) is matches


@pytest.mark.parametrize("pattern, branch", [
    ("1.0", "1x0"), ("a+b", "aab"), ("[ab]", "a"), ("(a|b)", "a"), ("a{2}", "aa"),
    ("^main$", "main"), ("ma\\in", "main"), (".*", "anything"),
    ("main", "main\n"), ("main", "main\nother"), ("*", "a\n/b"),
])
def test_regex_characters_are_only_themselves(pattern: str, branch: str) -> None:
    assert not branch_matches([pattern], branch)
    assert branch_matches([pattern], pattern)


def test_no_branch_matches_nothing_and_any_pattern_will_do() -> None:
    assert not branch_matches(["**"], None) and not branch_matches([], "main")
    assert branch_matches(["main", "release/*"], "release/2")


def test_a_crafted_branch_name_cannot_stall_the_server() -> None:
    """A backtracking regex of these patterns takes years on these names (one at 4 stars and
    250 characters took 1.7 s); a branch name is anyone's who can push."""
    patterns = ["*-" * 12 + "x", "**a" * 12 + "b", "*?" * 30 + "/x"]
    names = ["-" * 5000 + "/", "a" * 5000, "?" * 5000]
    started = time.monotonic()
    assert not any(branch_matches(patterns, name) for name in names)
    assert time.monotonic() - started < 5


def test_one_commit_type_with_lookups_left_empty() -> None:
    assert Commit("a" * 40) == Commit("a" * 40, "", "")
    with pytest.raises(AttributeError):
        Commit("a" * 40).sha = "b"  # type: ignore[misc]
