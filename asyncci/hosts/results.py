"""Test results from the JUnit XML files a finished job leaves on its host.

Every kind of host hands back the same bytes, so they are parsed here, once, the same way,
without I/O. The reports come from the job's own script, so they are treated
as hostile input: the standard library's parser reads them, which never fetches external
entities (left to itself, junitparser would use lxml where installed, which did so before
lxml 5), and junitparser only interprets the tree.
"""

from __future__ import annotations

import asyncio
from xml.etree import ElementTree

from junitparser import Error, Failure, JUnitXml, JUnitXmlError, Skipped, TestCase, TestSuite

from ..model.results import TestOutcome, TestResult

FEED_BYTES = 1 << 18  # about 10 ms of parsing between the loop's turns
MESSAGE_CHARS = 8000  # a failure's message and the start of its text (a traceback)


async def parse_junit(data: bytes, limit: int) -> list[TestResult]:
    """The first `limit` test cases of a JUnit report (a `<testsuites>` or a `<testsuite>`
    root, suites nested or not), in file order; ValueError says why a file is not a JUnit
    report. A report may hold millions of cases: the loop gets turns while it is read."""
    parser = ElementTree.XMLParser()
    try:
        for start in range(0, len(data), FEED_BYTES):
            parser.feed(data[start:start + FEED_BYTES])
            await asyncio.sleep(0)
        # junitparser's hint names a class of its own; it takes any ElementTree element.
        report = JUnitXml.fromroot(parser.close())  # type: ignore[arg-type]
    except ElementTree.ParseError as e:
        raise ValueError(f"not a JUnit XML file: {e}") from None
    except JUnitXmlError:
        raise ValueError("not a JUnit XML file: the root is neither <testsuites> nor"
                         " <testsuite>") from None
    # Before junitparser 4, a <testsuite> root came back as that suite, not wrapped.
    suites = [report] if isinstance(report, TestSuite) else report
    results: list[TestResult] = []
    for suite in suites:
        for case in suite:
            if len(results) >= limit:
                return results
            if len(results) % 1000 == 999:
                await asyncio.sleep(0)
            name = f"{case.classname}.{case.name}" if case.classname else case.name or ""
            results.append(TestResult(name, *_outcome(case), duration=_seconds(case)))
    return results


def _seconds(case: TestCase) -> float:
    """The case's `time`; what no test could take (text, NaN, negative, ages) is 0."""
    try:
        seconds = float(case.time or 0)
    except (TypeError, ValueError):
        return 0.0
    return seconds if 0 <= seconds < 1e9 else 0.0


def _outcome(case: TestCase) -> tuple[TestOutcome, str]:
    """A case with several results (a test that fails, then errors in its teardown) is
    what says most about the test itself: failed, then errored, then skipped."""
    for kind, outcome in ((Failure, TestOutcome.FAILED), (Error, TestOutcome.ERRORED),
                          (Skipped, TestOutcome.SKIPPED)):
        for result in case.result:
            if isinstance(result, kind):
                # pytest fills `message` with one line; where it failed is in the text.
                parts = [result.message or "", (result.text or "").strip()]
                return outcome, "\n".join(p for p in parts if p)[:MESSAGE_CHARS]
    return TestOutcome.PASSED, ""
