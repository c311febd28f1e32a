"""The event-driven loop around the fair queue: fills free slots, stops, times out, retries.

Woken by events (a new job, a freed slot, a host online, a cancel), never by a timer. A
slot is claimed in the store before its job starts; how the attempt ended is decided by
`decisions.verdict()` and written by `records.Recorder` before the slot is handed on,
unless `kills.Kills` holds it until a kill reached its host. On shutdown the tasks that
stream jobs are cancelled (the jobs go on, detached, and `recover()` reattaches them at
the next start); outcomes being written are waited for.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Coroutine, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..config import Config
from ..fairqueue import FairQueue, HostView, QueuedJob, Share, Waiting
from ..hosts.base import Collected, Host, HostLost, JobRun, Outcome
from ..logs import Logs
from ..logs.artifacts import Artifacts
from ..logs.joblog import JobLog
from ..model import (ActiveJob, BuildHead, Enqueued, HostState, HostStatus, Job, JobState,
                    counted, utcnow)
from ..store import Store
from .decisions import Verdict, duration, failure, job_run, needs, start_note, verdict
from .kills import Kills
from .records import Recorder, note

log = logging.getLogger(__name__)
NOTHING = Collected([], [], [])  # what an attempt that ran no script leaves
# How far down the queue a new job's first status looks for its position (~1 ms).
WALK_BOUND = 1000
SHUTDOWN_WAIT_S = 5.0


@dataclass
class Running:
    run: JobRun
    host: Host
    log: JobLog | None = None
    stop: tuple[JobState, str] | None = None  # set when asyncci itself stops the job


class Scheduler:
    def __init__(self, config: Config, store: Store, hosts: Iterable[Host], logs: Logs,
                 artifacts: Artifacts) -> None:
        self._store = store
        self._logs = logs
        self._artifacts = artifacts
        self._repos = {r.name: r for r in config.repos}
        self._reported = {r.name for r in config.repos if config.github and r.github}
        self._host_configs = {h.name: h for h in config.hosts}
        self.hosts: dict[str, Host] = {h.name: h for h in hosts}
        for host in self.hosts.values():
            host.watch(self.wake)  # a host coming online is a reason to fill slots
        self.queue = FairQueue({r.name: Share(r.weight, r.max_running) for r in config.repos})
        self._free = {name: list(range(h.slots)) for name, h in self.hosts.items()}
        self._drained: set[str] = set()
        self._running: dict[int, Running] = {}
        self._kills = Kills(store, self.hosts, self._freed, self._chore, self.wake)
        self._recorder = Recorder(store, self._repos, self._kills, self._push)
        self._tasks: set[asyncio.Task[None]] = set()  # jobs being streamed
        self._chores: set[asyncio.Task[None]] = set()  # kills, outcomes and statuses in flight
        self._writing: set[asyncio.Future[None]] = set()  # outcomes being written
        self._wake = asyncio.Event()
        self._untold: set[int] = set()  # queued jobs whose status does not say their wait yet

    # -- events -------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def on_enqueued(self, result: Enqueued) -> None:
        """The planner's callback: queue the new build's jobs, drop superseded ones."""
        for job in result.build.jobs:
            if job.state is JobState.QUEUED:
                self._push(result.build, job)
        self._cancelled((result.cancelled, result.stopping), "superseded by a newer build")
        self.wake()

    async def approve_build(self, build_id: int) -> bool:
        """Let a fork's jobs that wait for a person run; False if the build did not wait."""
        build = await self._store.approve_build(build_id)
        if build is None:
            return False
        for job in build.jobs:
            if job.state is JobState.QUEUED and self.queue.remove(job.id):
                self._push(build, job)
        log.info("build %d approved", build_id)
        self.wake()
        return True

    async def cancel_build(self, build_id: int) -> None:
        reason = "cancelled by a user"
        self._cancelled(await self._store.cancel_build(build_id, reason), reason)

    async def cancel_ref(self, repo: str, ref: str, reason: str) -> None:
        """Every unfinished build of a ref: a pull request was closed."""
        self._cancelled(await self._store.cancel_ref(repo, ref, reason), reason)

    def _cancelled(self, jobs: tuple[list[int], list[int]], reason: str) -> None:
        """Act on what the store cancelled: (queued jobs now cancelled, running to stop)."""
        cancelled, stopping = jobs
        self._forget(cancelled)
        self._stop_all(stopping, JobState.CANCELLED, reason)

    async def drain(self, host: str, drained: bool) -> None:
        await self._store.set_drained(host, drained)
        (self._drained.add if drained else self._drained.discard)(host)
        self.wake()

    # -- views for the API --------------------------------------------------------

    def host_statuses(self) -> list[HostStatus]:
        """Every host as the web shows it, in the config's order."""
        return [self._status(h) for h in self.hosts.values()]

    def _status(self, host: Host) -> HostStatus:
        drained = host.name in self._drained and host.state is HostState.ONLINE
        return HostStatus(host.name, HostState.DRAINING if drained else host.state, host.slots,
                          host.slots - len(self._free[host.name]), tuple(sorted(host.labels)),
                          host.last_error, host.latency_ms, host.abilities)

    def running(self) -> list[int]:
        """The jobs this scheduler runs (or reattaches to) now."""
        return list(self._running)

    def waiting(self, offset: int = 0, limit: int | None = None) -> list[Waiting]:
        """A page of the queue in pick order, with each job's position and reason."""
        return self.queue.explain(self._views(), offset, limit)

    def places(self, job_ids: Collection[int]) -> dict[int, tuple[str, str]]:
        """(position, reason) of each of these queued jobs, from one walk of at most
        WALK_BOUND positions: a job further back is `1000+`."""
        return {job_id: (str(w.position), w.reason) if isinstance(w, Waiting)
                else (f"{WALK_BOUND}+", w)
                for job_id, w in self.queue.positions(job_ids, self._views(), WALK_BOUND).items()}

    def _views(self) -> list[HostView]:
        return [HostView(h.name, h.labels | h.capabilities, h.state is HostState.ONLINE,
                         h.name in self._drained, len(self._free[h.name]),
                         self._host_configs[h.name].engine)
                for h in self.hosts.values()]

    def note(self, job_id: int) -> str | None:
        """What a running job waits for, live: its host, away for a while."""
        running = self._running.get(job_id)
        if running is None or (away := running.host.offline_since) is None:
            return None
        until = away + timedelta(seconds=self._host_configs[running.host.name].grace)
        return (f"host {running.host.name} lost at {away:%H:%M:%S} UTC;"
                f" waiting until {until:%H:%M:%S} UTC for it")

    def shell_command(self, build: BuildHead, job: Job) -> str | None:
        """How to open a shell in a job's workspace (SPEC §5), while its host is known."""
        host = self.hosts.get(job.host or "")
        if host is None or job.slot is None or build.untrusted:  # its workspace is gone
            return None
        return host.shell_command(build.repo, job.slot)

    # -- the loop -----------------------------------------------------------------

    async def recover(self) -> None:
        """Rebuild the queue from the store; reattach every job the store says runs."""
        self._drained = await self._store.drained_hosts() & set(self.hosts)
        await self._kills.recover()
        await self._store.drop_cancelled()
        reattached = 0
        for active in await self._store.active_jobs():
            job, build = active.job, active.build
            if job.state is JobState.QUEUED:  # its status was told before the restart
                self._push(build, job, tell=False)
                continue
            host = self.hosts.get(job.host or "")
            slot = job.slot if job.slot is not None else -1
            if host is None or slot not in self._free[host.name]:
                if host is not None:
                    self._kills.owe(host.name, job.id, job.attempt, slot)
                await self._recorder.requeue(build, job, Verdict(
                    JobState.QUEUED, f"host {job.host} is gone", kill=host is not None))
                continue
            self._free[host.name].remove(slot)
            self.queue.started(build.repo)
            self._spawn(active, host, attach=True)
            reattached += 1
        # Before a slot takes new work, what was given up on there must not still run.
        for name, free in self._free.items():
            self._kills.withhold(name, free)
        log.info("recovered queued=%d reattached=%d owed_kills=%d", len(self.queue),
                 reattached, len(self._kills))
        self.wake()

    async def run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await self._fill()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._settle(SHUTDOWN_WAIT_S)

    async def _settle(self, seconds: float) -> None:
        """Let outcomes being written, and kills that were sent, finish before the store
        closes (what they start meanwhile too); cancel what is left after `seconds`."""
        deadline = asyncio.get_running_loop().time() + seconds
        while pending := self._writing | self._chores:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                return
            await asyncio.wait(pending, timeout=left)

    async def _fill(self) -> None:
        for host in self.hosts.values():
            if host.state is not HostState.ONLINE:
                continue
            self._kills.pay(host)
            if host.name in self._drained:
                continue
            free = self._free[host.name]
            while free and (picked := self.queue.pick(host.labels | host.capabilities)):
                slot = free.pop(0)
                claim = await self._store.claim_job(picked.job_id, host.name, slot)
                if claim is None:  # cancelled meanwhile
                    self.queue.finished(picked.repo)
                    free.insert(0, slot)
                    continue
                waited = (utcnow() - (claim.job.queued_at or utcnow())).total_seconds()
                log.info("job %d running repo=%s build=%d host=%s slot=%d attempt=%d"
                         " waited=%.1fs", claim.job.id, claim.build.repo, claim.build.id,
                         host.name, slot, claim.job.attempt, waited)
                self._spawn(claim, host, attach=False)

    def _spawn(self, active: ActiveJob, host: Host, attach: bool) -> None:
        task = asyncio.create_task(self._execute(active, host, attach))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, active: ActiveJob, host: Host, attach: bool) -> None:
        """One attempt, from start (or reattach) to its recorded verdict. Whatever goes
        wrong on the way, the attempt ends in a recorded state and its slot is released;
        only a shutdown (cancellation) leaves it running, for the next start to reattach."""
        job, build = active.job, active.build
        try:
            ended, kept = await self._attempt(active, host, attach)
        except asyncio.CancelledError:
            if (gone := self._running.pop(job.id, None)) is not None and gone.log is not None:
                gone.log.close()
            raise
        running = self._running.get(job.id)
        stop, job_log = (running.stop, running.log) if running else (None, None)
        repo = self._repos.get(build.repo)
        decided = verdict(ended, stop, job.attempt, repo.retries if repo else 0)
        # The outcome must reach the store even if shutdown begins right now; run() waits
        # for it.
        record = asyncio.ensure_future(
            self._recorder.record(build, job, host.name, decided, kept, job_log))
        self._writing.add(record)
        record.add_done_callback(self._writing.discard)
        try:
            await asyncio.shield(record)
        finally:
            self._running.pop(job.id, None)
        self._release(host, job.slot or 0, build.repo)

    async def _attempt(self, active: ActiveJob, host: Host, attach: bool
                       ) -> tuple[Outcome | BaseException, Collected]:
        """How the attempt ended, and what it left. An error of asyncci's own before the
        host was asked to run it means it never ran; after, it may run on there."""
        job, build = active.job, active.build
        asked = False
        try:
            repo = self._repos.get(build.repo)
            if repo is None:
                raise LookupError(f"repo {build.repo} is no longer configured")
            run = job_run(build, job, self._host_configs[host.name], repo,
                          self._artifacts.max_bytes)
            running = self._running[job.id] = Running(run, host)
            job_log = running.log = self._logs.open(job.id, [] if build.untrusted else
                                                    [s.value for s in repo.secrets])
            if not attach:
                job_log.raw_offset = 0
                note(job_log, start_note(build, job, host.name, run))
            # A cancel (or a restart's pending one) that came before the job was listening.
            if (reason := await self._store.cancel_reason(job.id)) is not None:
                self._stop(job.id, JobState.CANCELLED, reason)
            asked = True
            ended = await self._run(host, run, job_log, job, attach)
        except Exception as e:  # noqa: BLE001 -- a full disk, a broken store: still recorded
            log.exception("job %d attempt %d: asyncci failed to run it", job.id, job.attempt)
            return (e if asked else Outcome(None, failure(e))), NOTHING
        if isinstance(ended, Outcome) and ended.exit_code is not None:
            return ended, await self._collect(host, run, job_log)
        return ended, NOTHING

    async def _run(self, host: Host, run: JobRun, job_log: JobLog, job: Job,
                   attach: bool) -> Outcome | HostLost:
        """Run (or reattach to) the attempt under its timeout."""
        timer = None
        if job.spec.timeout:
            started = job.started_at or utcnow()
            left = (started + timedelta(seconds=job.spec.timeout) - utcnow()).total_seconds()
            timer = asyncio.get_running_loop().call_later(
                max(left, 0), self._stop, job.id, JobState.FAILED,
                f"timed out after {duration(job.spec.timeout)}",
            )
        try:
            return await host.run(run, job_log, attach)
        except HostLost as e:
            return e
        finally:
            if timer:
                timer.cancel()

    async def _collect(self, host: Host, run: JobRun, job_log: JobLog) -> Collected:
        """Fetch what the attempt left on its host; what cannot be had is said in the log,
        and the job's state stays what its script made it."""
        if not (run.artifacts or run.junit):
            return NOTHING
        try:
            kept = await host.collect(run, self._artifacts.of(run.job_id))
        except Exception as e:  # noqa: BLE001 -- whatever goes wrong, the job must be recorded
            if not isinstance(e, HostLost):
                log.exception("job %d: collecting its files failed", run.job_id)
            note(job_log, f"[asyncci] artifacts and test results could not be fetched: {e}")
            return NOTHING
        for error in kept.errors:
            note(job_log, f"[asyncci] {error}")
        note(job_log, f"[asyncci] kept {counted(len(kept.artifacts), 'artifact')},"
                       f" {counted(len(kept.tests), 'test result')}")
        return kept

    def _release(self, host: Host, slot: int, repo: str) -> None:
        if not self._kills.holds(host.name, slot):  # else: once its kill reached the host
            self._freed(host.name, slot)
        self.queue.finished(repo)
        self.wake()

    def _freed(self, host: str, slot: int) -> None:
        self._free[host].append(slot)
        self._free[host].sort()
        self.wake()

    # -- stopping -----------------------------------------------------------------

    def _stop_all(self, job_ids: Iterable[int], state: JobState, reason: str) -> None:
        for job_id in job_ids:
            self._stop(job_id, state, reason)

    def _stop(self, job_id: int, state: JobState, reason: str) -> None:
        """Kill a running job's process group on its host; the streaming task then sees
        the job end and records `state`. The first reason to stop a job wins."""
        running = self._running.get(job_id)
        if running is None or running.stop is not None:
            return
        running.stop = (state, reason)
        log.info("job %d stopping: %s", job_id, reason)
        note(running.log, f"[asyncci] {reason}: stopping the job")
        self._chore(self._kills.kill(running.host, running.run.job_id, running.run.attempt,
                               running.run.slot))

    def _chore(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    # -- the queue ----------------------------------------------------------------

    def _forget(self, job_ids: Iterable[int]) -> None:
        for job_id in job_ids:
            self.queue.remove(job_id)

    def _push(self, build: BuildHead, job: Job, tell: bool = True) -> None:
        labels = frozenset(self._repos[build.repo].labels if build.repo in self._repos else ())
        self.queue.push(QueuedJob(job.id, build.repo, build.event.priority,
                                  labels | frozenset(job.spec.labels) | needs(build, job.spec)))
        if tell and build.repo in self._reported:
            if not self._untold:
                self._chore(self._tell_waits())
            self._untold.add(job.id)

    async def _tell_waits(self) -> None:
        """The `queued` statuses of the jobs just queued say where each stands: one walk of
        the queue for every job queued in the same turn of the loop."""
        await asyncio.sleep(0)
        untold, self._untold = self._untold, set()
        await self._store.set_wait_details({
            job_id: f"position {position}, {reason}"
            for job_id, (position, reason) in self.places(untold).items()})
