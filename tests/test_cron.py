"""A repo's schedule, asked directly: which expressions are refused, and what a start
after a missed slot builds. A real planner, store and repo (tests/support/planning.py)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from asyncci.model import Event
from asyncci.triggers.cron import Cron, schedule_error
from tests.support.gitrepo import GitRepo
from tests.support.planning import planning

YEARLY = "0 0 1 1 *"


def at(year: int, month: int = 1, day: int = 1, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=timezone.utc)


@pytest.mark.parametrize("expression", ["*/20 * * * *", YEARLY, "30 4 * * 1-5"])
def test_five_field_schedules_are_taken(expression: str) -> None:
    assert schedule_error(expression) is None


@pytest.mark.parametrize("expression", [
    "", "@daily", "* * * * * *", "61 * * * *", "* * * *", "every day", "*/0 * * * *"])
def test_anything_else_is_refused_with_an_example(expression: str) -> None:
    error = schedule_error(expression)
    assert error is not None and "cron expression of 5 fields" in error


async def test_a_schedule_that_never_ran_waits_for_its_first_slot(
        tmp_path: Path, repo: GitRepo) -> None:
    async with planning(tmp_path, repo, schedule=YEARLY) as p:
        assert await Cron(p.repo, p.planner).catch_up(at(2026, 12, 5)) is None
        assert await p.store.list_builds() == []


async def test_missed_slots_are_built_once_the_latest_of_them(
        tmp_path: Path, repo: GitRepo) -> None:
    async with planning(tmp_path, repo, schedule=YEARLY) as p:
        cron = Cron(p.repo, p.planner)
        first = await p.planner.cron(p.repo, at(2020))
        caught = await cron.catch_up(at(2026, 12, 5))  # 2021 … 2026 went by: one build
        assert caught is not None and caught != first.id
        assert await p.planner.last_cron(p.repo) == at(2026)
        assert await cron.catch_up(at(2026, 12, 6)) is None  # the next start: nothing due
        builds = await p.store.list_builds()
        assert [(b.event, b.sha) for b in builds] == [(Event.CRON, repo.head())] * 2


async def test_a_slot_is_built_once_however_often_it_fires(
        tmp_path: Path, repo: GitRepo) -> None:
    async with planning(tmp_path, repo, schedule=YEARLY) as p:
        builds = {(await p.planner.cron(p.repo, at(2026))).id for _ in range(3)}
        assert len(builds) == 1 and len(p.told) == 1
