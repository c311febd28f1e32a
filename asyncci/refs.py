"""What git names, in one place: a branch's full ref and the branch a ref is, a pull
request's ref, the config's branch globs, and the commit a trigger saw.

A leaf: stdlib only and none of asyncci, so every layer may use it. It never runs git and
never checks that a name is one git would take: that is `mirror.py`'s, which puts `--`
before every ref it is given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

HEADS = "refs/heads/"  # the branches' namespace, for refspecs and `for-each-ref`
PULLS = "refs/pull/"  # GitHub's: `refs/pull/N/head` is pull request N's head


@dataclass(frozen=True)
class Commit:
    """What a trigger knows of a commit; empty fields are looked up in the mirror."""

    sha: str
    message: str = ""
    author: str = ""


def full_ref(name: str) -> str:
    """What a person means by `name`: `main` is `refs/heads/main`; a full ref stays."""
    return name if name.startswith("refs/") else branch_ref(name)


def branch_ref(branch: str) -> str:
    """A branch's full ref, whatever its name looks like (a branch may be named `refs/x`)."""
    return HEADS + branch


def branch_of(ref: str) -> str | None:
    """The branch `ref` is, or None for a tag, a pull request or anything else."""
    return (ref[len(HEADS):] or None) if ref.startswith(HEADS) else None


def pull_ref(number: int) -> str:
    return f"{PULLS}{number}/head"


def is_pull_ref(ref: str) -> bool:
    return ref.startswith(PULLS)


def branch_matches(patterns: Iterable[str], branch: str | None) -> bool:
    """Whether a SPEC §2 glob matches the branch (`*` and `?` stop at `/`, `**` crosses it);
    what is no branch (None) matches none.

    In time the name's length times the pattern's at most: a regex of several `*` backtracks
    for seconds on a long crafted name, and branch names are anyone's who can push, while
    the server has one event loop."""
    return branch is not None and any(_glob(p).matches(branch) for p in patterns)


class _Glob:
    """A pattern as an automaton: a set of places in the pattern, moved one char at a time,
    so no choice of what a star took is ever tried twice."""

    def __init__(self, pattern: str) -> None:
        self.tokens = tuple(re.findall(r"\*\*|\*|\?|[^*?]", pattern))
        # Each place, with every place after it that stars matching nothing reach.
        reach: list[frozenset[int]] = [frozenset({len(self.tokens)})]
        for i in reversed(range(len(self.tokens))):
            star = self.tokens[i] in ("*", "**")
            reach.insert(0, frozenset({i}) | (reach[0] if star else frozenset()))
        self.reach = tuple(reach)
        self.literal = None if {"*", "**", "?"} & set(self.tokens) else pattern

    def matches(self, text: str) -> bool:
        if self.literal is not None:  # "main": most patterns are
            return text == self.literal
        places = self.reach[0]
        for char in text:
            moved: set[int] = set()
            for i in places:
                token = self.tokens[i] if i < len(self.tokens) else ""
                if token == "**" or token == "*" and char != "/":
                    moved |= self.reach[i]
                elif token == char or token == "?" and char != "/":
                    moved |= self.reach[i + 1]
            if not moved:
                return False
            places = frozenset(moved)
        return len(self.tokens) in places


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> _Glob:
    return _Glob(pattern)
