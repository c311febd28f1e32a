"""The web layer's pure parts, without a server: the JSON a build, job and host take,
how a request's numbers are read, how a live log is cut into events, how time is written."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from asyncci.model import (Attempt, Build, Event, HostState, HostStatus, Job, JobSpec, JobState,
                           utcnow)
from asyncci.web.durations import ago, clock, span
from asyncci.web.params import MAX_OFFSET, count, parse_count
from asyncci.web.shapes import build_json, host_json, job_json
from asyncci.web.streams import sse_event, utf8_boundary


class Live:
    """What a scheduler would say: it records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def shell_command(self, build: Build, job: Job) -> str | None:
        self.asked.append(f"shell {job.id}")
        return f"ssh b1 -t cd ws/{build.repo}/{job.slot}"

    def note(self, job_id: int) -> str | None:
        self.asked.append(f"note {job_id}")
        return "host b1 lost"


def a_build(*states: JobState, untrusted: bool = False) -> Build:
    now = utcnow()
    jobs = [Job(i, 7, f"j{i}", state, JobSpec(f"j{i}", "true", labels=("linux",)), host="b1",
                slot=0, reason="https://bot:TOKEN@example.com/x.git: not found",
                attempts=[Attempt(1, "b1", 0, now, None, None, None)])
            for i, state in enumerate(states, 1)]
    return Build(7, "demo", "refs/heads/main", "a" * 40, Event.PUSH, state=JobState.RUNNING,
                 created_at=now, untrusted=untrusted, jobs=jobs)


def test_a_job_asks_the_scheduler_only_what_its_state_needs() -> None:
    live = Live()
    build = a_build(JobState.FAILED, JobState.RUNNING, JobState.CANCELLED, JobState.ERRORED)
    shaped = build_json(build, live, "https://ci.example.com/")
    assert shaped["url"] == "https://ci.example.com/builds/7"
    assert [(j["shell"] is not None, j["note"]) for j in shaped["jobs"]] == [
        (True, None), (False, "host b1 lost"), (False, None), (True, None)]
    assert live.asked == ["shell 1", "note 2", "shell 4"]
    assert shaped["jobs"][0]["reason"] == "https://***@example.com/x.git: not found"
    assert shaped["jobs"][0]["attempts"][0]["started_at"].endswith("Z")
    json.dumps(shaped)  # all of it is JSON as it stands


def test_an_untrusted_job_says_it_is_confined() -> None:
    build = a_build(JobState.QUEUED, untrusted=True)
    shaped = job_json(build, build.jobs[0], Live())
    assert (shaped["confined"], shaped["network"], shaped["labels"]) == (
        "sandbox", True, ["linux"])


def test_a_host_is_shown_from_its_status_alone() -> None:
    status = HostStatus("b1", HostState.DRAINING, 4, 1, ("arm", "linux"), None, 2.5, "no")
    assert host_json(status) == {
        "name": "b1", "state": "draining", "slots": 4, "busy": 1, "labels": ["arm", "linux"],
        "last_error": None, "latency_ms": 2.5, "confines": "no"}
    assert status.up and not HostStatus("b2", HostState.OFFLINE, 1, 0, (), "down", None,
                                        "no").up


def test_a_count_is_plain_ascii_digits_within_bounds() -> None:
    assert [parse_count(raw) for raw in ("0", "42", str(MAX_OFFSET))] == [0, 42, MAX_OFFSET]
    for raw in ("", "-5", " 7 ", "1_0", "²", "9" * 5000, str(MAX_OFFSET + 1), "0x10"):
        assert parse_count(raw) is None, raw
    assert parse_count("11", hi=10) is None
    assert count("limit", None, 50) == count("limit", "", 50) == 50
    with pytest.raises(web.HTTPBadRequest) as refused:
        count("limit", "0", 50, lo=1, hi=500)
    assert json.loads(refused.value.text or "") == {
        "error": "limit must be an integer from 1 to 500, got '0'"}


def test_no_event_splits_a_character_and_line_ends_become_data_lines() -> None:
    snowman = "☃".encode()  # three bytes
    assert utf8_boundary(b"ab" + snowman) == 5
    assert utf8_boundary(b"ab" + snowman[:2]) == 2
    assert utf8_boundary(b"ab" + snowman[:1]) == 2
    assert utf8_boundary(b"") == 0
    assert sse_event("log", "a\r\nb\rc", 9) == b"event: log\nid: 9\ndata: a\ndata: b\ndata: c\n\n"
    assert sse_event("state", "{}", None) == b"event: state\ndata: {}\n\n"


def test_time_is_written_one_way() -> None:
    assert [span(s) for s in (-1, 0.44, 9.96, 59.9, 3599, 3600)] == [
        "0.0s", "0.4s", "10.0s", "59s", "59m 59s", "1h 00m"]
    assert [clock(ms) for ms in (None, 999, 65_000, 3_723_000)] == ["", "0:00", "1:05",
                                                                     "1:02:03"]
    assert ago(None) == "" and ago(utcnow().isoformat()) == "0s ago"
