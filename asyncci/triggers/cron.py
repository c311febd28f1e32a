"""Scheduled builds: a repo's `schedule` (cron syntax, via croniter) builds the head of its
default branch, keyed by the scheduled time, so a restart never builds a slot twice.
A schedule missed while the server was down fires once at start, not once per slot."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

from croniter import croniter

from ..config import RepoConfig
from ..config.checks import show
from ..mirror import GitError
from ..planner import PlanError, Planner

log = logging.getLogger(__name__)


def schedule_error(expression: str) -> str | None:
    """Why a repo's `schedule` is refused, or None: the one check of it, which `asyncci
    check` and `serve` run after the config loads (config.py is stdlib only). Five fields
    and no more: croniter would take seconds as a sixth, and `@daily`."""
    if len(expression.split()) == 5 and croniter.is_valid(expression):
        return None
    return f'must be a cron expression of 5 fields like "*/20 * * * *", got {show(expression)}'


class Cron:
    def __init__(self, repo: RepoConfig, planner: Planner) -> None:
        assert repo.schedule is not None
        self.repo = repo
        self._schedule = repo.schedule
        self._planner = planner

    async def run(self) -> None:
        await self.catch_up(datetime.now(timezone.utc))
        while True:
            now = datetime.now(timezone.utc)
            due = croniter(self._schedule, now).get_next(datetime)
            await asyncio.sleep((due - now).total_seconds())
            await self._fire(due)

    async def catch_up(self, now: datetime) -> int | None:
        """The latest slot before `now`, built if the schedule ran before and missed it (the
        server was down): once, however many slots went by. A schedule that never ran
        waits for its first slot rather than build at once on the first start. The build's
        id, if one was made."""
        missed = croniter(self._schedule, now).get_prev(datetime)
        last = await self._planner.last_cron(self.repo)
        if last is None or last >= missed:
            return None
        return await self._fire(missed)

    async def _fire(self, slot: datetime) -> int | None:
        try:
            build = await self._planner.cron(self.repo, slot)
        except (PlanError, GitError) as e:
            log.warning("cron repo=%s slot=%s: no build: %s", self.repo.name, slot.isoformat(), e)
            return None
        log.info("cron repo=%s slot=%s build=%d", self.repo.name, slot.isoformat(), build.id)
        return build.id
