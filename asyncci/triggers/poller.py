"""Polling: `git ls-remote` per repo on its interval, and at once when poked.

New branch heads become build requests through the planner (event `poll`, keyed like a
push, so a webhook for the same commit makes no second build). The heads seen are stored
only after their builds are, so a crash in between re-asks rather than forgets. A failing
poll is kept on the repo for the API and retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random

from ..config import RepoConfig
from ..mirror import GitError, Mirror
from ..planner import PlanError, Planner
from ..refs import Commit, branch_matches, branch_of

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 600.0


class Poller:
    def __init__(self, repo: RepoConfig, mirror: Mirror, planner: Planner) -> None:
        self.repo = repo
        self._mirror = mirror
        self._planner = planner
        self._poke = asyncio.Event()

    def poke(self) -> None:
        """Something changed (a post-receive hook said so): poll now."""
        self._poke.set()

    async def run(self) -> None:
        failures = 0
        while True:
            if self.repo.poll <= 0:  # webhooks only: poll when poked
                await self._poke.wait()
            self._poke.clear()
            try:
                await self.poll()
                failures = 0
            except (GitError, PlanError) as e:
                failures += 1
                log.warning("poll repo=%s failed (%d in a row): %s", self.repo.name, failures, e)
            if self.repo.poll <= 0:
                continue
            delay = min(self.repo.poll * 2 ** min(failures, 10), max(MAX_BACKOFF_S, self.repo.poll))
            # Jitter keeps many repos with one interval from polling in lockstep.
            delay *= random.uniform(0.9, 1.1)
            try:
                await asyncio.wait_for(self._poke.wait(), delay)
            except TimeoutError:
                pass

    async def poll(self) -> None:
        try:
            heads = {
                ref: sha for ref, sha in (await self._mirror.ls_remote()).items()
                if branch_matches(self.repo.branches, branch_of(ref))
            }
            known = await self._planner.known_heads(self.repo)
            changed = {ref: sha for ref, sha in heads.items() if known.get(ref) != sha}
            if changed:
                await self._mirror.fetch()
            for ref, sha in sorted(changed.items()):
                await self._build(ref, known.get(ref), sha)
        except (GitError, PlanError) as e:
            await self._planner.record_poll(self.repo, None, str(e))
            raise
        await self._planner.record_poll(self.repo, heads if heads != known else None)

    async def _build(self, ref: str, old: str | None, new: str) -> None:
        shas = [new]
        if self.repo.build_every_commit and old is not None:
            try:
                shas = await self._mirror.commits_between(old, new) or [new]
            except GitError:  # history rewritten (force push): build the new head only
                shas = [new]
        for sha in shas:
            await self._planner.branch_build(self.repo, ref, Commit(sha))
