"""Kills owed to hosts: an attempt given up on (its host lost, asyncci failed, a cancel
that did not get through) may still run where it was, so it is owed a kill, kept in the
store until the host took it, after a restart too. The slot it ran in takes no other job
until then: a new attempt there must never meet the old one's processes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from ..hosts.base import Host, JobRun
from ..store import Store

log = logging.getLogger(__name__)
KILLS_AT_ONCE = 16  # owed kills sent concurrently, over all hosts
KILL_RETRY_S = 5.0  # a kill the host refused is tried again after this

Chore = Callable[[Coroutine[Any, Any, None]], None]


class Kills:
    def __init__(self, store: Store, hosts: Iterable[str], freed: Callable[[str, int], None],
                 chore: Chore, wake: Callable[[], None]) -> None:
        self._store = store
        self._freed = freed  # hands a slot back to the scheduler
        self._chore = chore
        self._wake = wake
        # By host: (job id, attempt) → its slot, which stays withheld until the kill landed.
        self._owed: dict[str, dict[tuple[int, int], int]] = {n: {} for n in hosts}
        self._withheld: dict[str, set[int]] = {n: set() for n in self._owed}
        self._killing: set[tuple[int, int]] = set()
        self._retry_at: dict[tuple[int, int], float] = {}
        self._at_once = asyncio.Semaphore(KILLS_AT_ONCE)

    def __len__(self) -> int:
        return sum(map(len, self._owed.values()))

    async def recover(self) -> None:
        """The kills the store says are owed; one owed to a host no longer configured is
        dropped: nothing can reach it."""
        for job_id, attempt in await self._store.owed_kills():
            if attempt.host in self._owed:
                self._owed[attempt.host][(job_id, attempt.number)] = attempt.slot
            else:
                await self._store.owe_kill(job_id, attempt.number, False)

    def withhold(self, host: str, free: list[int]) -> None:
        """Take the slots of attempts owed a kill out of `free`, before they take new work."""
        for slot in set(self._owed[host].values()) & set(free):
            free.remove(slot)
            self._withheld[host].add(slot)

    def owe(self, host: str, job_id: int, attempt: int, slot: int) -> None:
        self._owed[host][(job_id, attempt)] = slot
        self._wake()

    def holds(self, host: str, slot: int) -> bool:
        """Whether the slot, just left by its job, must wait for a kill: then it is withheld
        until that kill landed."""
        if slot not in self._owed[host].values():
            return False
        self._withheld[host].add(slot)
        return True

    def pay(self, host: Host) -> None:
        """Send every kill owed to an online host that is not on its way already."""
        now = asyncio.get_running_loop().time()
        for (job_id, attempt), slot in list(self._owed[host.name].items()):
            key = (job_id, attempt)
            if key not in self._killing and self._retry_at.get(key, 0) <= now:
                self._chore(self.kill(host, job_id, attempt, slot, reap=True))

    async def kill(self, host: Host, job_id: int, attempt: int, slot: int,
                   reap: bool = False) -> None:
        """Stop an attempt on its host (with `reap`, wait until it is gone). One that does
        not get through is owed until the host takes it; its slot is handed on only then."""
        key = (job_id, attempt)
        self._killing.add(key)
        try:
            async with self._at_once:
                await host.kill(JobRun(job_id, attempt, "", "", "", "", slot, ""), reap)
        except Exception as e:  # noqa: BLE001 -- an owed kill is tried again, whatever failed
            log.warning("job %d attempt %d: kill not done on %s: %s", job_id, attempt,
                        host.name, e)
            if key not in self._owed[host.name]:
                self.owe(host.name, job_id, attempt, slot)
                await _quietly(self._store.owe_kill(job_id, attempt))
            loop = asyncio.get_running_loop()
            self._retry_at[key] = loop.time() + KILL_RETRY_S
            loop.call_later(KILL_RETRY_S, self._wake)
            return
        finally:
            self._killing.discard(key)
        self._retry_at.pop(key, None)
        owed = self._owed[host.name]
        if owed.pop(key, None) is None:
            return
        log.info("job %d attempt %d killed on %s", job_id, attempt, host.name)
        withheld = self._withheld[host.name]
        if slot in withheld and slot not in owed.values():
            withheld.discard(slot)
            self._freed(host.name, slot)
        # Should this fail, the kill is sent again after a restart: harmless.
        await _quietly(self._store.owe_kill(job_id, attempt, False))


async def _quietly(write: Coroutine[Any, Any, None]) -> None:
    try:
        await write
    except Exception:  # noqa: BLE001 -- a record of a kill only saves work after a restart
        log.exception("a kill's record was not written")
