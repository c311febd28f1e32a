"""What the server keeps beside builds and jobs: kills owed to hosts, drained hosts, the
branch heads each repo's poll saw, login sessions, and which logs have expired."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..model import Attempt, iso, utcnow
from .connection import Part, Sql
from .rows import attempt_from, timestamp


@dataclass(frozen=True)
class RepoStatus:
    poll_error: str | None
    polled_at: datetime | None


class Bookkeeping(Part):
    async def owed_kills(self) -> list[tuple[int, Attempt]]:
        """(job id, attempt) of every attempt that may still run where it was given up on
        (its host was away) or asked to stop (the kill did not reach its host)."""
        rows = await self._db.read(
            lambda sql: sql.all("SELECT * FROM attempts WHERE kill_pending = 1"))
        return [(r["job_id"], attempt_from(r)) for r in rows]

    async def owe_kill(self, job_id: int, attempt: int, owed: bool = True) -> None:
        """Remember (or, once it reached its host, forget) that an attempt is to be killed."""
        await self._db.write(lambda sql: sql.run(
            "UPDATE attempts SET kill_pending = ? WHERE job_id = ? AND number = ?",
            int(owed), job_id, attempt))

    async def cancel_reason(self, job_id: int) -> str | None:
        """Why a running job was asked to stop, if it was."""
        row = await self._db.read(lambda sql: sql.one(
            "SELECT reason FROM jobs WHERE id = ? AND cancel_requested = 1", job_id))
        return None if row is None else str(row[0] or "cancelled")

    async def expire_logs(self, before: datetime) -> list[int]:
        """Jobs finished before `before` whose logs and artifacts are to be deleted (each
        named once); their artifacts are no longer listed from now on."""

        def expire(sql: Sql) -> list[int]:
            rows = sql.all("UPDATE jobs SET log_expired = 1 WHERE log_expired = 0"
                           " AND finished_at IS NOT NULL AND finished_at < ? RETURNING id",
                           iso(before))
            sql.many("DELETE FROM artifacts WHERE job_id = ?", [(r[0],) for r in rows])
            return [r[0] for r in rows]

        return await self._db.write(expire)

    async def set_drained(self, host: str, drained: bool) -> None:
        await self._db.write(lambda sql: sql.run(
            "INSERT INTO hosts (name, drained) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET drained = excluded.drained", host, int(drained)))

    async def drained_hosts(self) -> set[str]:
        rows = await self._db.read(
            lambda sql: sql.all("SELECT name FROM hosts WHERE drained = 1"))
        return {r[0] for r in rows}

    async def heads(self, repo: str) -> dict[str, str]:
        rows = await self._db.read(
            lambda sql: sql.all("SELECT ref, sha FROM heads WHERE repo = ?", repo))
        return {r["ref"]: r["sha"] for r in rows}

    async def set_heads(self, repo: str, heads: dict[str, str]) -> None:
        def replace(sql: Sql) -> None:
            sql.run("DELETE FROM heads WHERE repo = ?", repo)
            sql.many("INSERT INTO heads (repo, ref, sha) VALUES (?,?,?)",
                     [(repo, ref, sha) for ref, sha in heads.items()])

        await self._db.write(replace)

    async def set_poll_result(self, repo: str, error: str | None) -> None:
        await self._db.write(lambda sql: sql.run(
            "INSERT INTO repos (name, poll_error, polled_at) VALUES (?,?,?)"
            " ON CONFLICT (name) DO UPDATE SET poll_error = excluded.poll_error,"
            " polled_at = excluded.polled_at", repo, error, iso(utcnow())))

    async def repo_status(self, repo: str) -> RepoStatus:
        row = await self._db.read(lambda sql: sql.one(
            "SELECT poll_error, polled_at FROM repos WHERE name = ?", repo))
        if row is None:
            return RepoStatus(None, None)
        return RepoStatus(row["poll_error"], timestamp(row["polled_at"]))

    async def add_session(self, key: str, expires_at: datetime) -> None:
        await self._db.write(lambda sql: sql.run(
            "INSERT INTO sessions (key, expires_at) VALUES (?, ?)", key, iso(expires_at)))

    async def drop_session(self, key: str) -> None:
        await self._db.write(lambda sql: sql.run("DELETE FROM sessions WHERE key = ?", key))

    async def live_sessions(self) -> dict[str, datetime]:
        """Every session not yet expired (expired ones are deleted on the way)."""

        def live(sql: Sql) -> list[tuple[str, str]]:
            sql.run("DELETE FROM sessions WHERE expires_at <= ?", iso(utcnow()))
            return [(r[0], r[1]) for r in sql.all("SELECT key, expires_at FROM sessions")]

        return {key: datetime.fromisoformat(at) for key, at in await self._db.write(live)}
