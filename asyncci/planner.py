"""The one door for every build request: triggers, webhooks, the API and rebuilds.

(repo, ref, sha, event) → a build and its jobs in the store, idempotently (the trigger
key), superseding older builds of the same ref (SPEC §3). The planner never runs a job:
it tells the scheduler through callbacks that `server.py` passes in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from datetime import datetime

from .config import Config, RepoConfig
from .mirror import GitError, Mirror, is_sha
from .model import Approval, Build, BuildRequest, Enqueued, Event, JobSpec, iso
from .pipeline import PipelineError, plan_jobs
from .refs import Commit, branch_matches, branch_of, branch_ref, full_ref, is_pull_ref, pull_ref
from .store import Store

log = logging.getLogger(__name__)
# GitHub's `author_association` values that need no approval for a fork's pull request.
TRUSTED_AUTHORS = {"OWNER", "MEMBER", "COLLABORATOR"}
UNTRUSTED_TIMEOUT = 1800.0  # an untrusted job's cap when its repo sets no timeout ("0")
# A build supersedes older ones of its ref made by these events: what a person asked for
# (manual) is never superseded automatically.
SUPERSEDABLE = frozenset(Event) - {Event.MANUAL}
# The one job of a build that could not be planned: its errored state carries the reason
# where jobs are looked at, and GitHub gets an error status for it.
PLAN_JOB = JobSpec("pipeline", "")


class PlanError(Exception):
    """The request cannot become a build: an unknown ref or commit. (A bad pipeline still
    makes a build, errored with the reason, so the commit's page says what is wrong.)"""


def branch_key(repo: str, ref: str, sha: str) -> str:
    """Push, poll and poke of the same commit share this key, so they make one build."""
    return f"branch\0{repo}\0{ref}\0{sha}"


def pull_request_key(repo: str, pr: int, sha: str) -> str:
    return f"pr\0{repo}\0{pr}\0{sha}"


def cron_key(repo: str, at: str) -> str:
    return f"cron\0{repo}\0{at}"


class Planner:
    def __init__(
        self,
        config: Config,
        store: Store,
        mirrors: dict[str, Mirror],
        on_enqueued: Callable[[Enqueued], None],
    ) -> None:
        self._config = config
        self._store = store
        self._mirrors = mirrors
        self._on_enqueued = on_enqueued

    async def request(
        self,
        repo: RepoConfig,
        ref: str,
        commit: Commit,
        event: Event,
        key: str | None,
        *,
        pr: int | None = None,
        fork: bool = False,
        untrusted: bool = False,
        approval: Approval | None = None,
        specs: Sequence[JobSpec] | None = None,
        base_ref: str | None = None,
        claim_key: str | None = None,
        rebuild_of: int | None = None,
        cron_slot: datetime | None = None,
    ) -> Enqueued:
        """Plan a build of `commit`; `key` None always makes a new one (manual builds).
        `base_ref` (a pull request's target) defaults to the default branch for other
        branches: their test results are compared with it."""
        commit = await self._described(repo, ref, commit)
        specs, error = await self._jobs(repo, commit.sha, specs, untrusted)
        request = BuildRequest(
            repo=repo.name, ref=ref, sha=commit.sha, event=event, trigger_key=key,
            claim_key=claim_key, rebuild_of=rebuild_of, pr=pr,
            message=commit.message, author=commit.author, fork=fork, untrusted=untrusted,
            approval=approval,
            github=repo.github if self._config.github else None,
            base_ref=base_ref or self._base_of(repo, ref), cron_slot=cron_slot,
        )
        result = await self._store.enqueue_build(
            request, specs, self._supersedes(repo, ref, event), error)
        if result.created:
            log.info("build %d queued repo=%s ref=%s sha=%s event=%s jobs=%d",
                     result.build.id, repo.name, ref, commit.sha[:12], event,
                     0 if error else len(specs))
            self._on_enqueued(result)
        return result

    async def _described(self, repo: RepoConfig, ref: str, commit: Commit) -> Commit:
        """`commit`, fetched into the mirror, with its message and author."""
        if not is_sha(commit.sha):
            raise PlanError(f"not a commit sha: {commit.sha!r}")
        mirror = self._mirrors[repo.name]
        try:
            await mirror.ensure(commit.sha, ref or None)
            if commit.message and commit.author:
                return commit
            found = await mirror.commit(commit.sha)
        except GitError as e:
            raise PlanError(str(e)) from e
        return Commit(commit.sha, commit.message or found.message, commit.author or found.author)

    async def _jobs(self, repo: RepoConfig, sha: str, specs: Sequence[JobSpec] | None,
                    untrusted: bool) -> tuple[list[JobSpec], str | None]:
        """The build's jobs (`specs`, or its pipeline at `sha`), or PLAN_JOB and why there
        are none. An untrusted build's jobs never run longer than the repo allows, whatever
        its pipeline file says."""
        if specs is None:
            try:
                specs = await plan_jobs(repo, self._mirrors[repo.name], sha)
            except PipelineError as e:
                return [PLAN_JOB], str(e)
        if not specs:
            return [PLAN_JOB], "the build has no jobs"
        if not untrusted:
            return list(specs), None
        cap = repo.timeout or UNTRUSTED_TIMEOUT
        return [replace(s, timeout=min(s.timeout or cap, cap)) for s in specs], None

    def _base_of(self, repo: RepoConfig, ref: str) -> str | None:
        default = self.default_ref(repo)
        return default if branch_of(ref) is not None and ref != default else None

    def _supersedes(self, repo: RepoConfig, ref: str, event: Event) -> frozenset[Event]:
        """The events whose unfinished builds of `ref` at other commits a build by `event`
        cancels (SPEC §3): none for a person's build, nor where the repo keeps them all."""
        if repo.build_every_commit or event is Event.MANUAL or not ref:
            return frozenset()
        if branch_matches(repo.keep_superseded, branch_of(ref)):
            return frozenset()
        return SUPERSEDABLE

    async def manual(self, repo: RepoConfig, ref: str | None, sha: str | None) -> Build:
        """A person asked: build `sha`, or the head of `ref`, or of the default branch."""
        if sha is None:
            ref, sha = await self._head(repo, ref or self.default_branch(repo))
        full = full_ref(ref) if ref else ""
        untrusted = await self._untrusted(repo, full, sha)
        # A branch's commit built by hand is that commit built: a poll or push seeing it
        # on the branch later makes no second build.
        claim = (branch_key(repo.name, full, sha)
                 if _builds(repo, branch_of(full)) and not untrusted else None)
        return (await self.request(repo, full, Commit(sha), Event.MANUAL, None,
                                   untrusted=untrusted, claim_key=claim)).build

    async def pull_request(self, repo: RepoConfig, number: int, sha: str, base: str,
                           fork: bool, association: str) -> Enqueued | None:
        """A pull request's head (SPEC §5a): one from a fork is untrusted, and under
        `fork_pull_requests = "approve"` waits for a person unless GitHub says its author
        belongs to the repo; None when fork pull requests are ignored."""
        if fork and repo.fork_pull_requests == "ignore":
            log.info("pull request %d of %s from a fork: ignored", number, repo.name)
            return None
        approval = None
        if fork and repo.fork_pull_requests == "approve" and association not in TRUSTED_AUTHORS:
            approval = Approval.WAITING
        return await self.request(
            repo, pull_ref(number), Commit(sha), Event.PULL_REQUEST,
            pull_request_key(repo.name, number, sha), pr=number, fork=fork, untrusted=fork,
            approval=approval, base_ref=branch_ref(base),
        )

    async def _untrusted(self, repo: RepoConfig, ref: str, sha: str) -> bool:
        """A person asked for this code: trusted only if a branch the repo builds holds it
        (SPEC §5a); a pull request's head never is, whoever's it is."""
        if is_pull_ref(ref):
            return True
        mirror = self._mirrors[repo.name]
        try:
            if _builds(repo, branch_of(ref)) and await mirror.resolve(ref) == sha:
                return False
            # A bare sha is judged on the branches as they are now: the mirror's may be
            # long stale (a webhook-only repo fetches what it lacks, not what moved), and a
            # commit force-pushed away must not stay trusted.
            await mirror.fetch()
            return not await self._on_built_branch(repo, sha)
        except GitError as e:
            log.warning("repo %s: cannot tell which branches hold %s, so it is untrusted: %s",
                        repo.name, sha[:12], e)
            return True

    async def _on_built_branch(self, repo: RepoConfig, sha: str) -> bool:
        """Whether a branch the repo builds holds `sha`: most often as its head, which
        the mirror knows without asking git."""
        mirror = self._mirrors[repo.name]
        return (any(_builds(repo, b) for b in await mirror.branches_at(sha))
                or any(_builds(repo, b) for b in await mirror.branches_containing(sha)))

    async def cron(self, repo: RepoConfig, slot: datetime) -> Build:
        """The schedule's build of the default branch's head for one time slot."""
        ref, sha = await self._head(repo, self.default_branch(repo))
        key = cron_key(repo.name, iso(slot) or "")
        return (await self.request(repo, ref, Commit(sha), Event.CRON, key,
                                   cron_slot=slot)).build

    async def last_cron(self, repo: RepoConfig) -> datetime | None:
        """The time slot of the repo's latest scheduled build."""
        return await self._store.last_cron_slot(repo.name)

    async def _head(self, repo: RepoConfig, ref: str) -> tuple[str, str]:
        full = full_ref(ref)
        mirror = self._mirrors[repo.name]
        try:
            await mirror.fetch(full)
            return full, await mirror.resolve(full)
        except GitError as e:
            raise PlanError(f"unknown ref {ref!r}: {e}") from e

    async def rebuild(self, build: Build, jobs: Collection[str] | None = None) -> Build:
        """A new manual build of the same commit with the pipeline stored with the old one:
        all of it, or only its jobs named in `jobs` (the failed ones, or one to retry)."""
        repo = self._config.repo(build.repo)
        if repo is None:
            raise PlanError(f"repo {build.repo} is no longer configured")
        # A build that could not be planned stored no jobs: plan it again (the config, or
        # whatever made planning fail, may have changed since), whichever jobs were asked.
        specs = await self._store.build_pipeline(build.id) or None
        if specs is not None and jobs is not None:
            specs = [s for s in specs if s.name in jobs]
            if not specs:
                raise PlanError(f"build {build.id} has no job named {', '.join(sorted(jobs))}")
        commit = Commit(build.sha, build.message, build.author)
        untrusted = build.untrusted or await self._untrusted(repo, build.ref, build.sha)
        return (await self.request(repo, build.ref, commit, Event.MANUAL, None, pr=build.pr,
                                   fork=build.fork, untrusted=untrusted, specs=specs,
                                   base_ref=build.base_ref, rebuild_of=build.id)).build

    async def branch_build(
        self, repo: RepoConfig, ref: str, commit: Commit, event: Event = Event.POLL
    ) -> Enqueued:
        """A branch head seen by a poll, a push webhook or a poke: one build per commit."""
        return await self.request(repo, ref, commit, event, branch_key(repo.name, ref, commit.sha))

    async def known_heads(self, repo: RepoConfig) -> dict[str, str]:
        """The branch heads the last successful poll saw (built or being built)."""
        return await self._store.heads(repo.name)

    async def record_poll(
        self, repo: RepoConfig, heads: dict[str, str] | None, error: str | None = None
    ) -> None:
        """Heads are recorded only after their builds are queued: a crash re-asks."""
        if heads is not None:
            await self._store.set_heads(repo.name, heads)
        await self._store.set_poll_result(repo.name, error)

    @classmethod
    def default_ref(cls, repo: RepoConfig) -> str | None:
        """The default branch's full ref, or None where `branches` has globs alone."""
        try:
            return branch_ref(cls.default_branch(repo))
        except PlanError:
            return None

    @staticmethod
    def default_branch(repo: RepoConfig) -> str:
        """The first branch pattern that names one plain branch (no glob)."""
        for pattern in repo.branches:
            if not any(c in pattern for c in "*?["):
                return pattern
        raise PlanError(f"repo {repo.name} has no plain branch in `branches`; give a ref")


def _builds(repo: RepoConfig, branch: str | None) -> bool:
    return branch_matches(repo.branches, branch)
