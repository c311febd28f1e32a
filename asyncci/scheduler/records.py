"""An attempt's verdict, into the store: written however long the store refuses (a locked
or full disk clears up), since its slot is not handed on before the store knows; and told
in the job's log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace

from ..config import RepoConfig
from ..hosts.base import Collected
from ..logs.joblog import JobLog
from ..model import BuildHead, Job, JobState
from ..store import Store
from .decisions import Verdict
from .kills import Kills

log = logging.getLogger(__name__)
RECORD_RETRY_S, RECORD_RETRY_MAX_S = 0.5, 30.0  # pauses between tries to record an outcome


class Recorder:
    def __init__(self, store: Store, repos: Mapping[str, RepoConfig], kills: Kills,
                 requeued: Callable[[BuildHead, Job], None]) -> None:
        self._store = store
        self._repos = repos
        self._kills = kills
        self._requeued = requeued  # the job is back in the store's queue: the scheduler's too

    async def record(self, build: BuildHead, job: Job, host: str, decided: Verdict,
                      kept: Collected, job_log: JobLog | None) -> None:
        """Write the verdict, trying again for as long as the store refuses (a locked or
        full disk clears up): the slot is not handed on before the store knows."""
        if decided.reason and (repo := self._repos.get(build.repo)) is not None:
            # git quotes the repo's URL in its errors: its token stays out of reasons.
            decided = replace(decided, reason=repo.redact(decided.reason))
        if decided.kill:
            self._kills.owe(host, job.id, job.attempt, job.slot or 0)
        if decided.exit_code is None and decided.reason and decided.state not in (
                JobState.CANCELLED, JobState.FAILED):
            note(job_log, f"[asyncci] attempt {job.attempt} lost: {decided.reason}"
                           + ("; it runs again" if decided.state is JobState.QUEUED else ""))
        pause = RECORD_RETRY_S
        while True:
            try:
                final = await self._write(build, job, decided, kept)
                break
            except Exception:  # noqa: BLE001 -- whatever the store says, try again
                log.exception("job %d attempt %d: outcome not recorded; trying again in %gs",
                              job.id, job.attempt, pause)
                await asyncio.sleep(pause)
                pause = min(2 * pause, RECORD_RETRY_MAX_S)
        if job_log is not None:
            try:
                job_log.finish() if final else job_log.close()
            except OSError:
                log.exception("job %d: its log could not be completed", job.id)

    async def _write(self, build: BuildHead, job: Job, decided: Verdict, kept: Collected) -> bool:
        """True when the job is finished."""
        if decided.state is JobState.QUEUED:
            return await self.requeue(build, job, decided) is not JobState.QUEUED
        final = await self._store.finish_job(
            job.id, job.attempt, decided.state, decided.exit_code, decided.reason,
            kept.artifacts, kept.tests, kill_owed=decided.kill)
        log.info("job %d %s repo=%s build=%d exit=%s%s", job.id, decided.state, build.repo,
                 build.id, decided.exit_code,
                 f" reason={decided.reason!r}" if decided.reason else "")
        return final

    async def requeue(self, build: BuildHead, job: Job, decided: Verdict) -> JobState | None:
        reason = decided.reason or "re-queued"
        state = await self._store.requeue_job(job.id, job.attempt, reason, decided.kill)
        log.warning("job %d attempt %d lost repo=%s build=%d: %s; %s", job.id, job.attempt,
                    build.repo, build.id, reason,
                    "re-queued" if state is JobState.QUEUED else f"now {state}")
        if state is JobState.QUEUED:
            self._requeued(build, job)
        return state


def note(job_log: JobLog | None, text: str) -> None:
    """A line of asyncci's in a job's log; a log that cannot take it changes no verdict."""
    if job_log is None:
        return
    try:
        job_log.note(text)
    except OSError as e:
        log.warning("job %d: a note was not written to its log: %s", job_log.job_id, e)


