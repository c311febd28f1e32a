"""The store: the single source of truth, and the only place that speaks SQL.

One SQLite file in WAL mode, one connection on its own thread (connection.py). Every state
change is a guarded `UPDATE … WHERE state = ?` (edges.py lists them all) committed before
anyone acts on it, and the outbox row that reports it is written in the same transaction.
Triggers are deduplicated by a unique `trigger_key`. Nothing here knows about hosts, git or
HTTP, nor decides policy: which builds a new one supersedes, and what a build that could
not be planned shows, the planner says.

`Store` is its concerns, each a class over the one connection: transitions, the outbox,
reads, test reports and the server's bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .bookkeeping import Bookkeeping
from .connection import Database
from .outbox import Outbox
from .reads import Reads
from .reports import Reports
from .transitions import Transitions


class Store(Transitions, Outbox, Reads, Reports, Bookkeeping):
    @classmethod
    async def open(cls, path: Path, on_outbox: Callable[[], None] | None = None) -> Store:
        """The database at `path`, created or migrated; `on_outbox` is called after each
        commit that added outbox rows (the reporter's wake-up: nothing here may import it)."""
        return cls(await Database.open(path, on_outbox))

    async def close(self) -> None:
        await self._db.close()
