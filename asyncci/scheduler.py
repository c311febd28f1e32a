"""The event-driven loop around the fair queue: fills free slots, stops, times out, retries.

Woken by events (a new job, a freed slot, a host online, a cancel), never by a timer. A
slot is claimed in the store before its job starts, and every way an attempt can end
(its script's exit, a stop, a lost host, any error of asyncci's own) is written there as
`verdict()` decides before the slot is handed on. An attempt that may still run where it
was given up on is owed a kill, kept in the store until its host took it; its slot takes
no other job until then. On shutdown the tasks that stream jobs are cancelled (the jobs go
on, detached, and `recover()` reattaches them at the next start); outcomes being written
are waited for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Coroutine, Iterable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from .config import Config, HostConfig, RepoConfig
from .fairqueue import FairQueue, HostView, QueuedJob, Share, Waiting
from .hosts.base import Collected, Host, HostLost, JobRun, Outcome
from .logs import Logs
from .logs.artifacts import Artifacts
from .logs.joblog import JobLog
from .model import (ActiveJob, Approval, BuildHead, Capability, Confinement, Enqueued, HostState,
                    HostStatus, Job, JobSpec, JobState, counted, utcnow)
from .store import Store

log = logging.getLogger(__name__)
NOTHING = Collected([], [], [])  # what an attempt that ran no script leaves
# How far down the queue a new job's first status looks for its position (~1 ms).
WALK_BOUND = 1000
KILLS_AT_ONCE = 16  # owed kills sent concurrently, over all hosts
RECORD_RETRY_S, RECORD_RETRY_MAX_S = 0.5, 30.0  # pauses between tries to record an outcome
KILL_RETRY_S = 5.0  # a kill the host refused is tried again after this
SHUTDOWN_WAIT_S = 5.0


def job_env(build: BuildHead, job: Job, host: HostConfig, repo: RepoConfig) -> dict[str, str]:
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


def needs(build: BuildHead, spec: JobSpec) -> frozenset[str]:
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


@dataclass(frozen=True)
class Verdict:
    state: JobState  # QUEUED: back to the queue for another attempt
    reason: str | None
    exit_code: int | None = None
    kill: bool = False  # the attempt may still run on its host: it is owed a kill


def verdict(ended: Outcome | BaseException, stop: tuple[JobState, str] | None,
            attempt: int, retries: int) -> Verdict:
    """How an attempt ended → what becomes of its job (SPEC §3). A script's exit decides,
    unless asyncci stopped it (cancel, timeout) first; an attempt that ended without
    one (host lost, checkout failed, an error of asyncci's own) is an infrastructure
    error: re-queued while `retries` last, then errored. Pure, so the table of cases is
    tested as a table."""
    never_ran = isinstance(ended, Outcome) and ended.error is not None
    code = ended.exit_code if isinstance(ended, Outcome) else None
    if code == 0:
        return Verdict(JobState.PASSED, None, 0)
    if stop is not None:
        return Verdict(*stop, code, kill=code is None and not never_ran)
    if code is not None:
        return Verdict(JobState.FAILED, f"exit code {code}", code)
    if isinstance(ended, Outcome):
        reason = ended.error or "the job ended without an exit status"
    elif isinstance(ended, HostLost):
        reason = str(ended)
    else:
        reason = _failure(ended)
    state = JobState.QUEUED if attempt <= retries else JobState.ERRORED
    return Verdict(state, reason, kill=not never_ran)


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
        # Attempts owed a kill, by host: (job id, attempt) → its slot, which stays withheld
        # (in `_withheld`) until the kill has reached the host.
        self._owed: dict[str, dict[tuple[int, int], int]] = {n: {} for n in self.hosts}
        self._withheld: dict[str, set[int]] = {n: set() for n in self.hosts}
        self._killing: set[tuple[int, int]] = set()
        self._kill_after: dict[tuple[int, int], float] = {}  # a refused kill's next try
        self._kill_slots = asyncio.Semaphore(KILLS_AT_ONCE)
        self._tasks: set[asyncio.Task[None]] = set()  # jobs being streamed
        self._chores: set[asyncio.Task[None]] = set()  # kills, outcomes and statuses in flight
        self._records: set[asyncio.Future[None]] = set()  # outcomes being written
        self._wake = asyncio.Event()
        self._untold: set[int] = set()  # queued jobs whose status does not say their wait yet

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

    def host_statuses(self) -> list[HostStatus]:
        """Every host as the web shows it, in the config's order."""
        return [HostStatus(h.name, self.host_state(h), h.slots, self.busy(h),
                           tuple(sorted(h.labels)), h.last_error, h.latency_ms, h.abilities)
                for h in self.hosts.values()]

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
        for job_id, attempt in await self._store.owed_kills():
            if attempt.host in self._owed:
                self._owed[attempt.host][(job_id, attempt.number)] = attempt.slot
            else:  # a host no longer configured: nothing can reach it
                await self._store.owe_kill(job_id, attempt.number, False)
        await self._store.drop_cancelled()
        reattached = 0
        for active in await self._store.active_jobs():
            job, build = active.job, active.build
            if job.state is JobState.QUEUED:  # its status was told before the restart
                self._push(job.id, build, job, tell=False)
                continue
            host = self.hosts.get(job.host or "")
            slot = job.slot if job.slot is not None else -1
            if host is None or slot not in self._free[host.name]:
                if host is not None:
                    self._owe(host.name, job.id, job.attempt, slot)
                await self._requeue(build, job, Verdict(
                    JobState.QUEUED, f"host {job.host} is gone", kill=host is not None))
                continue
            self._free[host.name].remove(slot)
            self.queue.started(build.repo)
            self._spawn(active, host, attach=True)
            reattached += 1
        # Before a slot takes new work, what was given up on there must not still run.
        for name, owed in self._owed.items():
            for slot in set(owed.values()) & set(self._free[name]):
                self._free[name].remove(slot)
                self._withheld[name].add(slot)
        log.info("recovered queued=%d reattached=%d owed_kills=%d", len(self.queue),
                 reattached, sum(map(len, self._owed.values())))
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
        while pending := self._records | self._chores:
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
            self._pay_kills(host)
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
        record = asyncio.ensure_future(self._record(build, job, host, decided, kept, job_log))
        self._records.add(record)
        record.add_done_callback(self._records.discard)
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
            run = self._job_run(build, job, host, repo)
            running = self._running[job.id] = Running(run, host)
            job_log = running.log = self._logs.open(job.id, [] if build.untrusted else
                                                    [s.value for s in repo.secrets])
            if not attach:
                job_log.raw_offset = 0
                _note(job_log, _start_note(build, job, host, run))
            # A cancel (or a restart's pending one) that came before the job was listening.
            if (reason := await self._store.cancel_reason(job.id)) is not None:
                self._stop(job.id, JobState.CANCELLED, reason)
            asked = True
            ended = await self._run(host, run, job_log, job, attach)
        except Exception as e:  # noqa: BLE001 -- a full disk, a broken store: still recorded
            log.exception("job %d attempt %d: asyncci failed to run it", job.id, job.attempt)
            return (e if asked else Outcome(None, _failure(e))), NOTHING
        if isinstance(ended, Outcome) and ended.exit_code is not None:
            return ended, await self._collect(host, run, job_log)
        return ended, NOTHING

    def _job_run(self, build: BuildHead, job: Job, host: Host, repo: RepoConfig) -> JobRun:
        return JobRun(job.id, job.attempt, build.repo, repo.url, build.sha, build.ref,
                      job.slot or 0, job.spec.script,
                      job_env(build, job, self._host_configs[host.name], repo),
                      job.spec.artifacts, job.spec.junit, self._artifacts.max_bytes, build.untrusted,
                      Confinement.of(job.spec, build.untrusted), job.spec.image,
                      job.spec.network)

    async def _run(self, host: Host, run: JobRun, job_log: JobLog, job: Job,
                   attach: bool) -> Outcome | HostLost:
        """Run (or reattach to) the attempt under its timeout."""
        timer = None
        if job.spec.timeout:
            started = job.started_at or utcnow()
            left = (started + timedelta(seconds=job.spec.timeout) - utcnow()).total_seconds()
            timer = asyncio.get_running_loop().call_later(
                max(left, 0), self._stop, job.id, JobState.FAILED,
                f"timed out after {_duration(job.spec.timeout)}",
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
            _note(job_log, f"[asyncci] artifacts and test results could not be fetched: {e}")
            return NOTHING
        for error in kept.errors:
            _note(job_log, f"[asyncci] {error}")
        _note(job_log, f"[asyncci] kept {counted(len(kept.artifacts), 'artifact')},"
                       f" {counted(len(kept.tests), 'test result')}")
        return kept

    async def _record(self, build: BuildHead, job: Job, host: Host, decided: Verdict,
                      kept: Collected, job_log: JobLog | None) -> None:
        """Write the verdict, trying again for as long as the store refuses (a locked or
        full disk clears up): the slot is not handed on before the store knows."""
        if decided.reason and (repo := self._repos.get(build.repo)) is not None:
            # git quotes the repo's URL in its errors: its token stays out of reasons.
            decided = replace(decided, reason=repo.redact(decided.reason))
        if decided.kill:
            self._owe(host.name, job.id, job.attempt, job.slot or 0)
        if decided.exit_code is None and decided.reason and decided.state not in (
                JobState.CANCELLED, JobState.FAILED):
            _note(job_log, f"[asyncci] attempt {job.attempt} lost: {decided.reason}"
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
            return await self._requeue(build, job, decided) is not JobState.QUEUED
        final = await self._store.finish_job(
            job.id, job.attempt, decided.state, decided.exit_code, decided.reason,
            kept.artifacts, kept.tests, kill_owed=decided.kill)
        log.info("job %d %s repo=%s build=%d exit=%s%s", job.id, decided.state, build.repo,
                 build.id, decided.exit_code,
                 f" reason={decided.reason!r}" if decided.reason else "")
        return final

    async def _requeue(self, build: BuildHead, job: Job, decided: Verdict) -> JobState | None:
        reason = decided.reason or "re-queued"
        state = await self._store.requeue_job(job.id, job.attempt, reason, decided.kill)
        log.warning("job %d attempt %d lost repo=%s build=%d: %s; %s", job.id, job.attempt,
                    build.repo, build.id, reason,
                    "re-queued" if state is JobState.QUEUED else f"now {state}")
        if state is JobState.QUEUED:
            self._push(job.id, build, job)
        return state

    def _release(self, host: Host, slot: int, repo: str) -> None:
        if any(s == slot for s in self._owed[host.name].values()):
            self._withheld[host.name].add(slot)  # until its kill has reached the host
        else:
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
        if running is None or running.stop is not None:
            return
        running.stop = (state, reason)
        log.info("job %d stopping: %s", job_id, reason)
        _note(running.log, f"[asyncci] {reason}: stopping the job")
        self._chore(self._kill(running.host, running.run.job_id, running.run.attempt,
                               running.run.slot))

    def _owe(self, host: str, job_id: int, attempt: int, slot: int) -> None:
        self._owed[host][(job_id, attempt)] = slot
        self.wake()

    def _pay_kills(self, host: Host) -> None:
        """Send every kill owed to an online host that is not on its way already."""
        for (job_id, attempt), slot in list(self._owed[host.name].items()):
            key = (job_id, attempt)
            if key not in self._killing and self._kill_after.get(key, 0) <= _now():
                self._chore(self._kill(host, job_id, attempt, slot, reap=True))

    async def _kill(self, host: Host, job_id: int, attempt: int, slot: int,
                    reap: bool = False) -> None:
        """Stop an attempt on its host (with `reap`, wait until it is gone). One that does
        not get through is owed, in the store, until the host takes it (after a restart
        too); its slot is handed on only then."""
        key = (job_id, attempt)
        self._killing.add(key)
        try:
            async with self._kill_slots:
                await host.kill(JobRun(job_id, attempt, "", "", "", "", slot, ""), reap)
        except Exception as e:  # noqa: BLE001 -- an owed kill is tried again, whatever failed
            log.warning("job %d attempt %d: kill not done on %s: %s", job_id, attempt,
                        host.name, e)
            if key not in self._owed[host.name]:
                self._owe(host.name, job_id, attempt, slot)
                await self._quietly(self._store.owe_kill(job_id, attempt))
            self._kill_after[key] = _now() + KILL_RETRY_S
            asyncio.get_running_loop().call_later(KILL_RETRY_S, self.wake)
            return
        finally:
            self._killing.discard(key)
        self._kill_after.pop(key, None)
        if self._owed[host.name].pop(key, None) is None:
            return
        log.info("job %d attempt %d killed on %s", job_id, attempt, host.name)
        withheld = self._withheld[host.name]
        if slot in withheld and slot not in self._owed[host.name].values():
            withheld.discard(slot)
            self._free[host.name].append(slot)
            self._free[host.name].sort()
            self.wake()
        # Should this fail, the kill is sent again after a restart: harmless.
        await self._quietly(self._store.owe_kill(job_id, attempt, False))

    @staticmethod
    async def _quietly(write: Coroutine[Any, Any, None]) -> None:
        try:
            await write
        except Exception:  # noqa: BLE001 -- a record of a kill only saves work after a restart
            log.exception("a kill's record was not written")

    def _chore(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    # -- the queue ----------------------------------------------------------------

    def _forget(self, job_ids: Iterable[int]) -> None:
        for job_id in job_ids:
            self.queue.remove(job_id)

    def _push(self, job_id: int, build: BuildHead, job: Job, tell: bool = True) -> None:
        labels = frozenset(self._repos[build.repo].labels if build.repo in self._repos else ())
        self.queue.push(QueuedJob(job_id, build.repo, build.event.priority,
                                  labels | frozenset(job.spec.labels) | needs(build, job.spec)))
        if tell and build.repo in self._reported:
            if not self._untold:
                self._chore(self._tell_waits())
            self._untold.add(job_id)

    async def _tell_waits(self) -> None:
        """The `queued` statuses of the jobs just queued say where each stands: one walk of
        the queue for every job queued in the same turn of the loop."""
        await asyncio.sleep(0)
        untold, self._untold = self._untold, set()
        await self._store.set_wait_details({
            job_id: f"position {position}, {reason}"
            for job_id, (position, reason) in self.places(untold).items()})


def _now() -> float:
    return asyncio.get_running_loop().time()


def _failure(error: BaseException) -> str:
    return f"asyncci could not run it: {type(error).__name__}: {error}"


def _note(job_log: JobLog | None, text: str) -> None:
    """A line of asyncci's in a job's log; a log that cannot take it changes no verdict."""
    if job_log is None:
        return
    try:
        job_log.note(text)
    except OSError as e:
        log.warning("job %d: a note was not written to its log: %s", job_log.job_id, e)


def _start_note(build: BuildHead, job: Job, host: Host, run: JobRun) -> str:
    confined = {None: "", Confinement.SANDBOX: ", in a sandbox",
                Confinement.CONTAINER: f", in a container of {run.image}"}
    return (f"[asyncci] attempt {job.attempt} on {host.name} slot {job.slot}"
            f" at {build.sha}{confined[run.confinement]}"
            + (" (untrusted: no secrets)" if build.untrusted else ""))


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"

