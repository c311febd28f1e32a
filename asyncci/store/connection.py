"""The one SQLite connection, and the thread it lives on.

Every read and every transaction is one callable run on that thread (one hop from the
event loop), not one await per statement: a transition's statements run together, and
the thread runs one callable at a time, so no two transactions ever interleave. That is
why nothing here needs a lock. A write is `BEGIN IMMEDIATE … COMMIT` inside its callable,
rolled back whole if any statement fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar, cast

import aiosqlite

from .schema import migrate

T = TypeVar("T")


class Sql:
    """The connection as a callable on the database thread sees it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        # Set by whatever adds outbox rows: the owner's hook is called once they are committed.
        self.outbox_added = False

    def one(self, sql: str, *args: object) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn.execute(sql, args).fetchone()
        return row

    def all(self, sql: str, *args: object) -> list[sqlite3.Row]:
        return list(self._conn.execute(sql, args))

    def run(self, sql: str, *args: object) -> sqlite3.Cursor:
        return self._conn.execute(sql, args)

    def many(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self._conn.executemany(sql, rows)


class Database:
    def __init__(self, conn: aiosqlite.Connection, on_outbox: Callable[[], None] | None
                 ) -> None:
        self._conn = conn
        self._on_outbox = on_outbox

    @classmethod
    async def open(cls, path: Path, on_outbox: Callable[[], None] | None = None) -> Database:
        """The file at `path`, migrated; `on_outbox` is called (on the event loop) after
        each commit that added outbox rows."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # SQLite gives its -wal and -shm files the database file's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        db = cls(conn, on_outbox)
        try:
            await db._run(migrate)
        except BaseException:
            await conn.close()
            raise
        return db

    async def close(self) -> None:
        await self._conn.close()

    async def read(self, fn: Callable[[Sql], T]) -> T:
        return await self._run(lambda conn: fn(Sql(conn)))

    async def write(self, fn: Callable[[Sql], T]) -> T:
        """`fn`'s statements in one transaction, committed before this returns. The hook
        is called from the database thread: a caller cancelled meanwhile still wakes the
        reporter for the rows its transaction committed."""
        loop, hook = asyncio.get_running_loop(), self._on_outbox

        def transaction(conn: sqlite3.Connection) -> T:
            sql, result = _transaction(conn, fn)
            if sql.outbox_added and hook is not None:
                with contextlib.suppress(RuntimeError):  # a loop closed meanwhile: no reporter
                    loop.call_soon_threadsafe(hook)
            return result

        return await self._run(transaction)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # aiosqlite has no public way to run a callable on its thread; `_execute` (the
        # queue to that thread) and `_conn` are what its own `execute` uses (read in
        # 0.22). Without them each statement would be a hop of its own.
        conn = self._conn
        result = await conn._execute(lambda: fn(conn._conn))  # type: ignore[no-untyped-call]
        return cast(T, result)


def _transaction(conn: sqlite3.Connection, fn: Callable[[Sql], T]) -> tuple[Sql, T]:
    sql = Sql(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(sql)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return sql, result


class Part:
    """One concern of the store (transitions, reads, …); `Store` is all of them over one
    Database."""

    def __init__(self, db: Database) -> None:
        self._db = db
