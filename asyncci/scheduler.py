"""The event-driven loop around the fair queue: fills free slots, stops, times out, retries.

Woken by events (a new job, a freed slot, a host online, a cancel), never by a timer. A
slot is claimed in the store before its job starts, and every outcome is written there
before the slot is handed on. On shutdown the tasks that stream jobs are cancelled and
write nothing: the jobs go on, detached, and `recover()` reattaches them at the next start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from .config import Config, HostConfig, RepoConfig
from .fairqueue import FairQueue, HostView, QueuedJob, Share, Waiting
from .hosts.base import Collected, Host, HostLost, JobRun, Outcome
from .logs import JobLog, Logs
from .model import (Approval, Build, Capability, Confinement, HostState, Job, JobSpec, JobState,
                    counted, utcnow)
from .store import ActiveJob, Enqueued, Store

log = logging.getLogger(__name__)
NOTHING = Collected([], [], [])  # what an attempt that ran no script leaves
# How far back a restart looks for attempts given up on, to stop them on their hosts.
STALE_WINDOW = timedelta(days=1)


def job_env(build: Build, job: Job, host: HostConfig, repo: RepoConfig) -> dict[str, str]:
    """SPEC §5, in its order: ASYNCCI_* first, then `env`, `slot_env`, secrets (never for
    an untrusted build).
    The base variables (PATH, HOME, USER, LANG, SHELL, TERM) come from the host's side."""
    slot = str(job.slot)
    env = {
        "CI": "true",
        "ASYNCCI": "true",
        "ASYNCCI_BUILD_ID": str(build.id),
        "ASYNCCI_JOB_ID": str(job.id),
        "ASYNCCI_REPO": build.repo,
        "ASYNCCI_SHA": build.sha,
        "ASYNCCI_REF": build.ref,
        "ASYNCCI_BRANCH": build.branch or "",
        "ASYNCCI_PR": "" if build.pr is None else str(build.pr),
        "ASYNCCI_EVENT": str(build.event),
        "ASYNCCI_HOST": host.name,
        "ASYNCCI_SLOT": slot,
        "ASYNCCI_ATTEMPT": str(job.attempt),
    }
    env.update(job.spec.env)
    env.update({k: v.replace("{slot}", slot) for k, v in host.slot_env.items()})
    if not build.untrusted:
        env.update({s.name: s.value for s in repo.secrets})
    return env


def needs(build: Build, spec: JobSpec) -> frozenset[str]:
    """The capabilities a job needs of its host (SPEC §5a), beside its labels."""
    wanted = set()
    if (confinement := Confinement.of(spec, build.untrusted)) is not None:
        wanted.add(Capability.CONTAINER if confinement is Confinement.CONTAINER
                   else Capability.SANDBOX)
    if build.untrusted:
        wanted.add(Capability.UNTRUSTED)
    if build.approval is Approval.WAITING:
        wanted.add(Capability.APPROVED)
    return frozenset(map(str, wanted))


@dataclass
class Running:
    run: JobRun
    host: Host
    repo: str
    stop_state: JobState | None = None  # set when asyncci itself stops the job
    stop_reason: str | None = None


class Scheduler:
    def __init__(self, config: Config, store: Store, hosts: Iterable[Host], logs: Logs) -> None:
        self._store = store
        self._logs = logs
        self._artifacts = config.server.artifacts_dir
        self._artifact_cap = config.server.max_artifact_bytes
        self._repos = {r.name: r for r in config.repos}
        self._host_configs = {h.name: h for h in config.hosts}
        self.hosts: dict[str, Host] = {h.name: h for h in hosts}
        for host in self.hosts.values():
            host.watch(self.wake)  # a host coming online is a reason to fill slots
        self.queue = FairQueue({r.name: Share(r.weight, r.max_running) for r in config.repos})
        self._free = {name: list(range(h.slots)) for name, h in self.hosts.items()}
        self._drained: set[str] = set()
        self._running: dict[int, Running] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # jobs being streamed
        self._kills: set[asyncio.Task[None]] = set()  # quick: the host does the waiting
        self._wake = asyncio.Event()
        self._explained: dict[int, Waiting] = {}
        self._explained_at = 0.0

    # -- events -------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def on_enqueued(self, result: Enqueued) -> None:
        """The planner's callback: queue the new build's jobs, drop superseded ones."""
        for job in result.build.jobs:
            if job.state is JobState.QUEUED:
                self._push(job.id, result.build, job)
        self._cancelled((result.cancelled, result.stopping), "superseded by a newer build")
        self.wake()

    async def approve_build(self, build_id: int) -> bool:
        """Let a fork's jobs that wait for a person run; False if the build did not wait."""
        build = await self._store.approve_build(build_id)
        if build is None:
            return False
        for job in build.jobs:
            if job.state is JobState.QUEUED and self.queue.remove(job.id):
                self._push(job.id, build, job)
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

    def host_state(self, host: Host) -> HostState:
        if host.name in self._drained and host.state is HostState.ONLINE:
            return HostState.DRAINING
        return host.state

    def busy(self, host: Host) -> int:
        return host.slots - len(self._free[host.name])

    def waiting(self) -> list[Waiting]:
        return self.queue.explain([
            HostView(h.name, h.labels | h.capabilities, h.state is HostState.ONLINE,
                     h.name in self._drained, len(self._free[h.name]),
                     self._host_configs[h.name].engine)
            for h in self.hosts.values()
        ])

    def wait_text(self, job_id: int) -> str | None:
        """A queued job's position and reason, for status texts; the whole queue is
        explained at most once a second however many statuses go out."""
        now = time.monotonic()
        if now - self._explained_at > 1.0:
            self._explained = {w.job.job_id: w for w in self.waiting()}
            self._explained_at = now
        found = self._explained.get(job_id)
        return f"position {found.position}, {found.reason}" if found else None

    def shell_command(self, build: Build, job: Job) -> str | None:
        """How to open a shell in a job's workspace (SPEC §5), while its host is known."""
        host = self.hosts.get(job.host or "")
        if host is None or job.slot is None or build.untrusted:  # its workspace is gone
            return None
        return host.shell_command(build.repo, job.slot)

    # -- the loop -----------------------------------------------------------------

    async def recover(self) -> None:
        """Rebuild the queue from the store; reattach every job the store says runs."""
        self._drained = await self._store.drained_hosts() & set(self.hosts)
        reattached = 0
        for active in await self._store.active_jobs():
            job, build = active.job, active.build
            if job.state is JobState.QUEUED:
                self._push(job.id, build, job)
                continue
            host = self.hosts.get(job.host or "")
            slot = job.slot if job.slot is not None else -1
            if host is None or slot not in self._free[host.name]:
                await self._store.requeue_job(job.id, job.attempt, f"host {job.host} is gone")
                self._push(job.id, build, job)
                continue
            self._free[host.name].remove(slot)
            self.queue.started(build.repo)
            self._spawn(active, host, attach=True)
            reattached += 1
        # Before a host takes new work, what was given up on it must not still run there.
        for job_id, attempt in await self._store.requeued_attempts(utcnow() - STALE_WINDOW):
            if (host := self.hosts.get(attempt.host)) is not None:
                stale = JobRun(job_id, attempt.number, "", "", "", "", attempt.slot, "")
                self._send_kill(host, stale)
        log.info("recovered queued=%d reattached=%d", len(self.queue), reattached)
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
            if self._kills:  # let kills that were sent reach their hosts
                await asyncio.wait(self._kills, timeout=5)

    async def _fill(self) -> None:
        for host in self.hosts.values():
            if host.state is not HostState.ONLINE or host.name in self._drained:
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
                log.info("job %d running host=%s slot=%d attempt=%d waited=%.1fs",
                         claim.job.id, host.name, slot, claim.job.attempt, waited)
                self._spawn(claim, host, attach=False)

    def _spawn(self, active: ActiveJob, host: Host, attach: bool) -> None:
        task = asyncio.create_task(self._execute(active, host, attach))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, active: ActiveJob, host: Host, attach: bool) -> None:
        job, build = active.job, active.build
        repo = self._repos.get(build.repo)
        if repo is None:
            await self._store.finish_job(job.id, job.attempt, JobState.ERRORED,
                                         reason=f"repo {build.repo} is no longer configured")
            self._release(host, job.slot or 0, build.repo)
            return
        env = job_env(build, job, self._host_configs[host.name], repo)
        run = JobRun(job.id, job.attempt, build.repo, repo.url, build.sha, build.ref,
                     job.slot or 0, job.spec.script, env, job.spec.artifacts, job.spec.junit,
                     self._artifact_cap, build.untrusted,
                     Confinement.of(job.spec, build.untrusted), job.spec.image,
                     job.spec.network)
        secrets = [] if build.untrusted else [s.value for s in repo.secrets]
        job_log = self._logs.open(job.id, secrets)
        if not attach:
            job_log.raw_offset = 0
            confined = {None: "", Confinement.SANDBOX: ", in a sandbox",
                        Confinement.CONTAINER: f", in a container of {run.image}"}
            job_log.note(f"[asyncci] attempt {job.attempt} on {host.name} slot {job.slot}"
                         f" at {build.sha}{confined[run.confinement]}"
                         + (" (untrusted: no secrets)" if build.untrusted else ""))
        running = self._running[job.id] = Running(run, host, build.repo)
        # A cancel (or a restart's pending one) that came before the job was listening.
        if (reason := await self._store.cancel_reason(job.id)) is not None:
            self._stop(job.id, JobState.CANCELLED, reason)
        timer = None
        if job.spec.timeout:
            started = job.started_at or utcnow()
            left = (started + timedelta(seconds=job.spec.timeout) - utcnow()).total_seconds()
            timer = asyncio.get_running_loop().call_later(
                max(left, 0), self._stop, job.id, JobState.FAILED,
                f"timed out after {_duration(job.spec.timeout)}",
            )
        try:
            try:
                outcome: Outcome | HostLost = await host.run(run, job_log, attach)
            except HostLost as e:
                outcome = e
            finally:
                if timer:
                    timer.cancel()
            kept = NOTHING
            if isinstance(outcome, Outcome) and outcome.exit_code is not None:
                kept = await self._collect(host, run, job_log)
            # The outcome must reach the store even if shutdown begins right now.
            final = await asyncio.shield(
                self._record(build, job, repo, running, outcome, kept))
        except asyncio.CancelledError:
            job_log.close()
            raise
        finally:
            self._running.pop(job.id, None)
        if final:
            job_log.finish()
        else:
            job_log.close()
        self._release(host, run.slot, build.repo)

    async def _collect(self, host: Host, run: JobRun, job_log: JobLog) -> Collected:
        """Fetch what the attempt left on its host; what cannot be had is said in the log,
        and the job's state stays what its script made it."""
        if not (run.artifacts or run.junit):
            return NOTHING
        try:
            kept = await host.collect(run, self._artifacts / str(run.job_id))
        except Exception as e:  # noqa: BLE001 -- whatever goes wrong, the job must be recorded
            if not isinstance(e, HostLost):
                log.exception("job %d: collecting its files failed", run.job_id)
            job_log.note(f"[asyncci] artifacts and test results could not be fetched: {e}")
            return NOTHING
        for error in kept.errors:
            job_log.note(f"[asyncci] {error}")
        job_log.note(f"[asyncci] kept {counted(len(kept.artifacts), 'artifact')},"
                     f" {counted(len(kept.tests), 'test result')}")
        return kept

    async def _record(
        self, build: Build, job: Job, repo: RepoConfig, running: Running,
        outcome: Outcome | HostLost, kept: Collected,
    ) -> bool:
        """Write how the attempt ended; False when the job goes back to the queue."""
        code = outcome.exit_code if isinstance(outcome, Outcome) else None
        if running.stop_state is not None and code != 0:
            state, reason = running.stop_state, running.stop_reason
        elif code == 0:
            state, reason = JobState.PASSED, None
        elif code is not None:
            state, reason = JobState.FAILED, f"exit code {code}"
        else:
            reason = (str(outcome) if isinstance(outcome, HostLost)
                      else outcome.error or "the job ended without an exit status")
            if job.attempt <= repo.retries:
                log.warning("job %d attempt %d lost: %s; re-queued", job.id, job.attempt, reason)
                if await self._store.requeue_job(job.id, job.attempt, reason):
                    self._push(job.id, build, job)
                return False
            state = JobState.ERRORED
        await self._store.finish_job(job.id, job.attempt, state, code, reason,
                                     kept.artifacts, kept.tests)
        log.info("job %d %s exit=%s reason=%s", job.id, state, code, reason)
        return True

    def _release(self, host: Host, slot: int, repo: str) -> None:
        self._free[host.name].append(slot)
        self._free[host.name].sort()
        self.queue.finished(repo)
        self.wake()

    # -- stopping -----------------------------------------------------------------

    def _stop_all(self, job_ids: Iterable[int], state: JobState, reason: str) -> None:
        for job_id in job_ids:
            self._stop(job_id, state, reason)

    def _stop(self, job_id: int, state: JobState, reason: str) -> None:
        """Kill a running job's process group on its host; the streaming task then sees
        the job end and records `state`. The first reason to stop a job wins."""
        running = self._running.get(job_id)
        if running is None or running.stop_state is not None:
            return
        running.stop_state, running.stop_reason = state, reason
        log.info("job %d stopping: %s", job_id, reason)
        self._send_kill(running.host, running.run)

    def _send_kill(self, host: Host, run: JobRun) -> None:
        task = asyncio.create_task(self._kill(host, run))
        self._kills.add(task)
        task.add_done_callback(self._kills.discard)

    async def _kill(self, host: Host, run: JobRun) -> None:
        try:
            await host.kill(run)
        except HostLost as e:
            log.warning("job %d: kill failed: %s", run.job_id, e)

    def _forget(self, job_ids: Iterable[int]) -> None:
        for job_id in job_ids:
            self.queue.remove(job_id)

    def _push(self, job_id: int, build: Build, job: Job) -> None:
        labels = frozenset(self._repos[build.repo].labels if build.repo in self._repos else ())
        self.queue.push(QueuedJob(job_id, build.repo, build.event.priority,
                                  labels | frozenset(job.spec.labels) | needs(build, job.spec)))


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"

