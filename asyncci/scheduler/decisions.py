"""What the scheduler decides, as pure functions: a job's environment, what it needs of a
host, how an attempt's end turns into its job's next state, and asyncci's own lines in a
job's log. Nothing here awaits or keeps state, so each is tested on its own."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import HostConfig, RepoConfig
from ..hosts.base import HostLost, JobRun, Outcome
from ..model import Approval, BuildHead, Capability, Confinement, Job, JobSpec, JobState


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


def job_run(build: BuildHead, job: Job, host: HostConfig, repo: RepoConfig,
            artifact_cap: int) -> JobRun:
    """What a host is told of an attempt."""
    return JobRun(job.id, job.attempt, build.repo, repo.url, build.sha, build.ref,
                  job.slot or 0, job.spec.script, job_env(build, job, host, repo),
                  job.spec.artifacts, job.spec.junit, artifact_cap, build.untrusted,
                  Confinement.of(job.spec, build.untrusted), job.spec.image, job.spec.network)


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
        reason = failure(ended)
    state = JobState.QUEUED if attempt <= retries else JobState.ERRORED
    return Verdict(state, reason, kill=not never_ran)



def failure(error: BaseException) -> str:
    """An error of asyncci's own, as the job's reason says it."""
    return f"asyncci could not run it: {type(error).__name__}: {error}"


def start_note(build: BuildHead, job: Job, host: str, run: JobRun) -> str:
    confined = {None: "", Confinement.SANDBOX: ", in a sandbox",
                Confinement.CONTAINER: f", in a container of {run.image}"}
    return (f"[asyncci] attempt {job.attempt} on {host} slot {job.slot}"
            f" at {build.sha}{confined[run.confinement]}"
            + (" (untrusted: no secrets)" if build.untrusted else ""))


def duration(seconds: float) -> str:
    """A timeout as the config spells it: `5m`, `1h`, `90s`."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
