"""Test results from the JUnit XML files a finished job leaves on its host.

Every kind of host hands back the same bytes, so they are parsed here, once, the same way:
pure functions, no I/O. The reports come from the job's own script, so they are treated
as hostile input: the standard library's parser reads them, which never fetches external
entities (left to itself, junitparser would use lxml where installed, which did so before
lxml 5), and junitparser only interprets the tree.
"""

from __future__ import annotations

from io import BytesIO
from xml.etree import ElementTree

from junitparser import Error, Failure, JUnitXml, JUnitXmlError, Skipped, TestCase, TestSuite

from ..model import TestOutcome, TestResult

MESSAGE_CHARS = 2000  # a failure's message, or the start of its text: enough to recognise it


def parse_junit(data: bytes) -> list[TestResult]:
    """Each test case of a JUnit report (a `<testsuites>` or a `<testsuite>` root, suites
    nested or not), in file order; ValueError says why a file is not a JUnit report."""
    try:
        report = JUnitXml.fromfile(BytesIO(data), parse_func=ElementTree.parse)
    except ElementTree.ParseError as e:
        raise ValueError(f"not a JUnit XML file: {e}") from None
    except JUnitXmlError:
        raise ValueError("not a JUnit XML file: the root is neither <testsuites> nor"
                         " <testsuite>") from None
    # Before junitparser 4, a <testsuite> root came back as that suite, not wrapped.
    suites = [report] if isinstance(report, TestSuite) else report
    results = []
    for suite in suites:
        for case in suite:
            name = f"{case.classname}.{case.name}" if case.classname else case.name or ""
            results.append(TestResult(name, *_outcome(case)))
    return results


def _outcome(case: TestCase) -> tuple[TestOutcome, str]:
    """A case with several results (a test that fails, then errors in its teardown) is
    what says most about the test itself: failed, then errored, then skipped."""
    for kind, outcome in ((Failure, TestOutcome.FAILED), (Error, TestOutcome.ERRORED),
                          (Skipped, TestOutcome.SKIPPED)):
        for result in case.result:
            if isinstance(result, kind):
                text = result.message or (result.text or "").strip()
                return outcome, text[:MESSAGE_CHARS]
    return TestOutcome.PASSED, ""
