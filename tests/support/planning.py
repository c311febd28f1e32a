"""A planner on a real store in a tmp dir and a real mirror of a test repo, with what it
told the scheduler: for tests that ask the planner, or a trigger, directly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncci.config import RepoConfig, load_config
from asyncci.mirror import Mirror
from asyncci.model import Enqueued, JobState
from asyncci.planner import Planner
from asyncci.store import Store

from .config import make_config
from .gitrepo import GitRepo


@dataclass
class Planning:
    planner: Planner
    store: Store
    repo: RepoConfig
    told: list[Enqueued]  # what the scheduler was told

    async def state(self, build_id: int) -> JobState:
        build = await self.store.get_build(build_id)
        assert build is not None
        return build.state


@asynccontextmanager
async def planning(tmp_path: Path, repo: GitRepo, **keys: Any) -> AsyncIterator[Planning]:
    config = load_config(make_config(
        tmp_path, [{"name": "demo", "url": str(repo.path), "script": "make", **keys}]))
    store = await Store.open(tmp_path / "data" / "asyncci.db")
    told: list[Enqueued] = []
    mirror = Mirror(tmp_path / "data" / "mirrors" / "demo.git", str(repo.path))
    try:
        yield Planning(Planner(config, store, {"demo": mirror}, told.append), store,
                       config.repos[0], told)
    finally:
        await store.close()
