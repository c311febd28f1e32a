"""The scheduler's decisions: how an attempt ended → what becomes of its job, every way a
job's task can end, pending cancels across restarts, kills owed to hosts, statuses told
as they were."""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asyncci.hosts.base import HostLost, Outcome
from asyncci.hosts.local import LocalHost
from asyncci.logs import Logs
from asyncci.model import BuildRequest, Event, JobSpec, JobState
from asyncci.scheduler.decisions import Verdict, verdict
from asyncci.store import Store
from tests.support.gitrepo import GitRepo
from tests.support.server import api_for, running_server


Q, P, F, E, C = (JobState.QUEUED, JobState.PASSED, JobState.FAILED, JobState.ERRORED,
                 JobState.CANCELLED)
LOST = HostLost("host a unreachable for more than 60s")
CANCEL = (C, "cancelled by a user")
TIMEOUT = (F, "timed out after 5m")


@pytest.mark.parametrize("ended, stop, attempt, retries, expected", [
    # The script's exit decides.
    (Outcome(0), None, 1, 2, Verdict(P, None, 0)),
    (Outcome(3), None, 1, 2, Verdict(F, "exit code 3", 3)),
    (Outcome(3), None, 3, 0, Verdict(F, "exit code 3", 3)),  # a failure is never retried
    # ... unless asyncci stopped it; a script that passed before the stop passed.
    (Outcome(143), CANCEL, 1, 2, Verdict(C, "cancelled by a user", 143)),
    (Outcome(137), TIMEOUT, 1, 2, Verdict(F, "timed out after 5m", 137)),
    (Outcome(0), CANCEL, 1, 2, Verdict(P, None, 0)),
    # A stopped job whose host went away is what it was stopped as, and owed a kill.
    (LOST, CANCEL, 1, 2, Verdict(C, "cancelled by a user", None, kill=True)),
    (LOST, TIMEOUT, 3, 2, Verdict(F, "timed out after 5m", None, kill=True)),
    # Infrastructure errors: re-queued while retries last, then errored.
    (LOST, None, 1, 2, Verdict(Q, str(LOST), kill=True)),
    (LOST, None, 3, 2, Verdict(E, str(LOST), kill=True)),
    (Outcome(None, "checkout failed"), None, 1, 2, Verdict(Q, "checkout failed")),
    (Outcome(None, "checkout failed"), None, 2, 1, Verdict(E, "checkout failed")),
    (Outcome(None), None, 1, 0, Verdict(E, "the job ended without an exit status", kill=True)),
    # asyncci's own failures are infrastructure errors too, never a stuck job.
    (OSError(errno.ENOSPC, "No space left on device"), None, 1, 1,
     Verdict(Q, "asyncci could not run it: OSError: [Errno 28] No space left on device",
             kill=True)),
    (sqlite3.OperationalError("disk I/O error"), None, 2, 1,
     Verdict(E, "asyncci could not run it: OperationalError: disk I/O error", kill=True)),
])
def test_verdict(ended: Outcome | BaseException, stop: tuple[JobState, str] | None,
                 attempt: int, retries: int, expected: Verdict) -> None:
    assert verdict(ended, stop, attempt, retries) == expected


SHA = "b" * 40


async def _store_with_job(path: Path, github: str | None = "o/r") -> tuple[Store, int, int]:
    store = await Store.open(path)
    done = await store.enqueue_build(
        BuildRequest(repo="demo", ref="refs/heads/main", sha=SHA, event=Event.MANUAL,
                     trigger_key=None, github=github), [JobSpec("build", "sleep 60")])
    return store, done.build.id, done.build.jobs[0].id


async def test_every_edge_of_cancel_and_requeue(tmp_path: Path) -> None:
    store, build_id, job_id = await _store_with_job(tmp_path / "db")
    try:
        assert await store.claim_job(job_id, "h1", 0) is not None
        # A cancel of a running job is pending until the scheduler stops it ...
        assert await store.cancel_build(build_id, "cancelled by a user") == ([], [job_id])
        # ... and an attempt lost meanwhile does not put the job back in the queue.
        assert await store.requeue_job(job_id, 1, "host h1 is gone", True) is C
        job = await store.get_job(job_id)
        assert job is not None and (job.state, job.reason) == (C, "cancelled by a user")
        assert (job.attempts[0].outcome, job.attempts[0].reason) == ("cancelled",
                                                                      "host h1 is gone")
        assert (await store.get_build(build_id)).state is C  # type: ignore[union-attr]
        assert await store.owed_kills() == [(job_id, job.attempts[0])]
        await store.owe_kill(job_id, 1, False)
        assert await store.owed_kills() == []
        # Nothing moves a finished job.
        assert await store.requeue_job(job_id, 1, "again") is None
        assert await store.claim_job(job_id, "h1", 0) is None
        assert not await store.finish_job(job_id, 1, P)
        assert [(i.state, i.detail) for i in await store.pending_outbox()] == [
            (Q, None), (JobState.RUNNING, "h1"), (C, "cancelled by a user")]
    finally:
        await store.close()


async def test_a_queued_job_left_with_a_pending_cancel_ends_cancelled(tmp_path: Path) -> None:
    """An older release re-queued a job whose cancel was pending, and never ran it."""
    store, build_id, job_id = await _store_with_job(tmp_path / "db")
    await store.close()
    with sqlite3.connect(tmp_path / "db") as db:
        db.execute("UPDATE jobs SET cancel_requested = 1, reason = 'cancelled by a user'")
    store = await Store.open(tmp_path / "db")
    try:
        assert await store.claim_job(job_id, "h1", 0) is None
        assert (await store.get_build(build_id)).state is C  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_a_restart_ends_queued_jobs_left_with_a_pending_cancel(
    config_for: Callable[..., Path], tmp_path: Path
) -> None:
    """Even one no host would ever claim (labels no host has)."""
    config = config_for(labels=["nowhere"])
    store, build_id, job_id = await _store_with_job(tmp_path / "data" / "asyncci.db", None)
    await store.close()
    with sqlite3.connect(tmp_path / "data" / "asyncci.db") as db:
        db.execute("UPDATE jobs SET cancel_requested = 1, reason = 'cancelled by a user'")
    async with running_server(config) as server, api_for(server) as api:
        build = await api.build(build_id, timeout=10)
    assert build["state"] == "cancelled"


async def test_statuses_say_what_was_true_at_each_transition(tmp_path: Path) -> None:
    store, _, job_id = await _store_with_job(tmp_path / "db")
    try:
        await store.set_wait_details({job_id: "position 1, all matching slots busy"})
        await store.claim_job(job_id, "h1", 0)
        await store.requeue_job(job_id, 1, "host h1 unreachable")
        await store.set_wait_details({job_id: "position 3, no online host"})
        await store.claim_job(job_id, "h2", 1)
        await store.finish_job(job_id, 2, F, 1, "exit code 1")
        await store.set_wait_details({job_id: "too late: not queued any more"})
        assert [(i.state, i.detail) for i in await store.pending_outbox()] == [
            (Q, "position 1, all matching slots busy"), (JobState.RUNNING, "h1"),
            (Q, "position 3, no online host"), (JobState.RUNNING, "h2"), (F, "exit code 1")]
    finally:
        await store.close()


async def test_a_job_whose_cancel_was_pending_at_a_restart_ends_cancelled(
    config_for: Callable[..., Path], tmp_path: Path
) -> None:
    """Cancelled while running on a host that is gone when the server starts again."""
    config = config_for()
    store, build_id, job_id = await _store_with_job(tmp_path / "data" / "asyncci.db", None)
    await store.claim_job(job_id, "gone", 0)
    await store.cancel_build(build_id, "cancelled by a user")
    await store.close()
    async with running_server(config) as server, api_for(server) as api:
        build = await api.build(build_id, timeout=10)
    assert (build["state"], build["jobs"][0]["state"]) == ("cancelled", "cancelled")
    assert build["jobs"][0]["attempts"][0]["reason"] == "host gone is gone"


async def _passed_after_a_fault(config: Path, monkeypatch: pytest.MonkeyPatch, target: Any,
                                name: str, fault: BaseException) -> dict[str, Any]:
    """Make `target.name` raise `fault` once, then run a build to its end."""
    real = getattr(target, name)
    faults = [fault]

    def once(*args: Any, **kwargs: Any) -> Any:
        if faults:
            raise faults.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, once)
    async with running_server(config) as server, api_for(server) as api:
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        done = await api.build(build["id"], timeout=30)
        hosts = (await api.get("/api/hosts"))["hosts"]
    assert not faults, "the fault was not met"
    assert [h["busy"] for h in hosts] == [0]  # no slot leaked
    return done


@pytest.mark.parametrize("target, name", [(LocalHost, "run"), (Logs, "open")])
async def test_a_job_whose_task_fails_is_retried_and_its_slot_released(
    config_for: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, target: Any, name: str
) -> None:
    fault = OSError(errno.ENOSPC, "No space left on device")
    done = await _passed_after_a_fault(config_for(), monkeypatch, target, name, fault)
    job = done["jobs"][0]
    assert (done["state"], job["attempt"]) == ("passed", 2)
    assert job["attempts"][0]["outcome"] == "requeued"
    assert "No space left on device" in job["attempts"][0]["reason"]


async def test_an_outcome_the_store_refused_once_is_recorded(
    config_for: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    fault = sqlite3.OperationalError("database is locked")
    done = await _passed_after_a_fault(config_for(), monkeypatch, Store, "finish_job", fault)
    assert (done["state"], done["jobs"][0]["attempt"]) == ("passed", 1)


async def test_a_manual_build_of_a_branch_head_is_not_built_again_by_the_poller(
    config_for: Callable[..., Path], repo: GitRepo
) -> None:
    async with running_server(config_for(branches=["main"])) as server, api_for(server) as api:
        for _ in range(2):  # a person may ask twice: two builds
            assert (await api.call("POST", "/api/repos/demo/builds", {"ref": "main"}))[0] == 201
        await server.pollers["demo"].poll()
        builds = (await api.get("/api/builds"))["builds"]
        assert [b["event"] for b in builds] == ["manual", "manual"]
        repo.commit("next")  # a new head is built as usual
        await server.pollers["demo"].poll()
        builds = (await api.get("/api/builds"))["builds"]
        assert [(b["event"], b["sha"]) for b in builds][0] == ("poll", repo.head())
        assert len(builds) == 3


async def test_the_data_dir_is_the_servers_users_alone(config_for: Callable[..., Path],
                                                       tmp_path: Path) -> None:
    async with running_server(config_for()) as server, api_for(server) as api:
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        await api.build(build["id"])
    data = tmp_path / "data"
    assert data.stat().st_mode & 0o777 == 0o700
    assert (data / "asyncci.db").stat().st_mode & 0o077 == 0
    assert all(f.stat().st_mode & 0o077 == 0 for f in (data / "logs").iterdir())


async def test_a_log_that_refuses_asynccis_notes_changes_no_verdict(
    config_for: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script's exit decides even when the disk is full for asyncci's own lines (the
    start note, the collection note): a failure is never re-run by itself."""
    def full(self: Any, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("asyncci.logs.joblog.JobLog.note", full)
    config = config_for("exit 3", retries=2)
    async with running_server(config) as server, api_for(server) as api:
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        done = await api.build(build["id"])
        hosts = (await api.get("/api/hosts"))["hosts"]
    assert (done["state"], done["jobs"][0]["attempt"]) == ("failed", 1)
    assert [h["busy"] for h in hosts] == [0]


async def test_a_part_that_will_not_stop_does_not_hold_the_server_up(
    config_for: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SPEC §1: a stop takes a few seconds; a part stuck past STOP_WAIT_S is logged with
    where it waits, and the server stops all the same."""
    release = asyncio.Event()

    async def stubborn(self: Any) -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    monkeypatch.setattr("asyncci.server.STOP_WAIT_S", 0.5)
    monkeypatch.setattr("asyncci.triggers.poller.Poller.run", stubborn)
    async with running_server(config_for()):
        pass
    release.set()
    assert "stopping: poll demo did not end within 0.5s" in caplog.text
    assert "stubborn" in caplog.text
