"""A job's test results and artifacts, and what changed against the base branch: the
vocabulary of SPEC §7's test reports, shared by the collection on hosts, the store, the
API and the GitHub statuses. Nothing here does I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from . import counted


class TestOutcome(StrEnum):
    __test__ = False  # not a pytest class, whatever its name

    PASSED = "passed"
    FAILED = "failed"
    ERRORED = "errored"
    SKIPPED = "skipped"

    @property
    def failing(self) -> bool:
        return self in (TestOutcome.FAILED, TestOutcome.ERRORED)


@dataclass(frozen=True)
class TestResult:
    """One test case of a job's JUnit reports; `name` is `classname.name`."""

    __test__ = False

    name: str
    outcome: TestOutcome
    message: str = ""
    # Seconds, from the report's `time`: a measurement, not part of what the test is.
    duration: float = field(default=0.0, compare=False)


@dataclass(frozen=True)
class Artifact:
    path: str  # relative to the job's workspace, "/"-separated
    size: int


@dataclass(frozen=True)
class TestReport:
    """A job's test results, and what changed against the base branch (SPEC §7's
    `/api/jobs/{id}/tests`). `base_build` None: nothing to compare with (no `base_ref`
    applies, as for the default branch, or it has no results yet), so no
    new/fixed/still-failing lists rather than a guess."""

    __test__ = False

    totals: dict[str, int]
    failures: list[TestResult]
    base_ref: str | None = None
    base_build: int | None = None
    new: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    still_failing: list[str] = field(default_factory=list)

    @classmethod
    def compare(cls, results: Iterable[TestResult], base_ref: str | None,
                base_build: int | None, base: Iterable[TestResult]) -> TestReport:
        """New: failing now, not failing on the base. Fixed: failing on the base, passing
        now (a test that vanished is not fixed). Still failing: failing on both."""
        results = list(results)
        totals = {str(o): 0 for o in TestOutcome}
        for r in results:
            totals[str(r.outcome)] += 1
        failures = [r for r in results if r.outcome.failing]
        if base_build is None:
            return cls(totals, failures, base_ref)
        was_failing = {r.name for r in base if r.outcome.failing}
        passing = {r.name for r in results if r.outcome is TestOutcome.PASSED}
        return cls(
            totals, failures, base_ref, base_build,
            new=[r.name for r in failures if r.name not in was_failing],
            fixed=sorted(was_failing & passing),
            still_failing=[r.name for r in failures if r.name in was_failing],
        )

    def summary(self, width: int = 140) -> str:
        """`1 new failure (B), 1 fixed (C), 1 still failing (A)`, cut to `width`: a
        GitHub status description."""
        if not any(self.totals.values()):
            return "no test results"
        if self.base_build is None:
            failing = f"{len(self.failures)} of {sum(self.totals.values())} tests failing"
            if self.base_ref is not None:
                failing += " (nothing on the base branch to compare with yet)"
            return _cut(failing, width)
        parts = [_named("new failure", self.new) if self.new else "no new failures"]
        if self.fixed:
            parts.append(_named("fixed", self.fixed, plural=""))
        if self.still_failing:
            parts.append(_named("still failing", self.still_failing, plural=""))
        return _cut(", ".join(parts), width)


def _named(what: str, names: list[str], plural: str = "s") -> str:
    shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
    return f"{counted(len(names), what, plural)} ({shown})"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
