"""The outbox: the statuses owed to GitHub. A row is written in the transaction of the state
it tells, so a told state is a committed one, told as it was then; the reporter marks it
sent once GitHub has it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..model import JobState, OutboxItem, iso, utcnow
from .connection import Part, Sql
from .rows import job_from


def add_rows(sql: Sql, job_ids: Sequence[int], state: JobState, detail: str | None = None
             ) -> None:
    """Rows for the jobs of builds that report to GitHub (a queued job's wait is added by
    `set_wait_details`), in the caller's transaction."""
    if not job_ids:
        return
    added = sql.run(
        f"INSERT INTO outbox (job_id, state, detail, created_at)"
        f" SELECT j.id, ?, ?, ? FROM jobs j JOIN builds b ON b.id = j.build_id"
        f" WHERE j.id IN ({','.join('?' * len(job_ids))}) AND b.github IS NOT NULL",
        str(state), detail, iso(utcnow()), *job_ids)
    if added.rowcount > 0:
        sql.outbox_added = True


class Outbox(Part):
    async def set_wait_details(self, details: Mapping[int, str]) -> None:
        """A just-queued job's position and wait reason, for its unsent `queued` status."""
        await self._db.write(lambda sql: sql.many(
            "UPDATE outbox SET detail = ? WHERE id = (SELECT MAX(id) FROM outbox"
            " WHERE job_id = ? AND state = 'queued') AND sent_at IS NULL AND detail IS NULL",
            [(text, job_id) for job_id, text in details.items()]))

    async def pending_outbox(self, limit: int = 100) -> list[OutboxItem]:
        rows = await self._db.read(lambda sql: sql.all(
            "SELECT o.id AS o_id, o.state AS o_state, o.detail AS o_detail, j.*,"
            " b.github AS b_github, b.sha AS b_sha"
            " FROM outbox o JOIN jobs j ON j.id = o.job_id JOIN builds b ON b.id = j.build_id"
            " WHERE o.sent_at IS NULL ORDER BY o.id LIMIT ?", limit))
        return [OutboxItem(r["o_id"], job_from(r), r["b_github"], r["b_sha"],
                           JobState(r["o_state"]), r["o_detail"]) for r in rows]

    async def mark_sent(self, outbox_id: int) -> None:
        await self._db.write(lambda sql: sql.run(
            "UPDATE outbox SET sent_at = ? WHERE id = ?", iso(utcnow()), outbox_id))
