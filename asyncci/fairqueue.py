"""The fair queue of SPEC §4 as pure code: no asyncio, no I/O.

Per repo, one heap of job ids per (priority, label set): label sets are few, so a pick
looks at a handful of heap heads per repo, never at the jobs behind them. Repos share the
slots by stride scheduling: the fewest running jobs per weight first, then the smallest
pass; each start advances a repo's pass by 1/weight, and a repo coming back from an empty
queue re-enters at no less than the smallest pass of the busy ones (idle banks no credit).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class QueuedJob:
    job_id: int  # grows with age: FIFO order within a class
    repo: str
    priority: int  # Event.priority: 0 manual, 1 push/poll/cron, 2 pull_request
    labels: frozenset[str]


@dataclass(frozen=True, slots=True)
class Share:
    weight: float = 1.0
    max_running: int = 0  # 0: no cap


@dataclass(frozen=True, slots=True)
class HostView:
    name: str
    labels: frozenset[str]
    online: bool
    draining: bool
    free_slots: int


@dataclass(frozen=True, slots=True)
class Waiting:
    job: QueuedJob
    position: int  # 1-based, in pick order
    reason: str


@dataclass
class _Repo:
    share: Share
    running: int = 0
    pass_: float = 0.0
    queued: int = 0
    heaps: dict[tuple[int, frozenset[str]], list[int]] = field(default_factory=dict)


class FairQueue:
    def __init__(self, shares: Mapping[str, Share]) -> None:
        self._repos: dict[str, _Repo] = {}
        self._jobs: dict[int, QueuedJob] = {}
        self.set_shares(shares)

    def set_shares(self, shares: Mapping[str, Share]) -> None:
        self._shares = dict(shares)
        for name, repo in self._repos.items():
            repo.share = self._shares.get(name, Share())

    def _repo(self, name: str) -> _Repo:
        repo = self._repos.get(name)
        if repo is None:
            repo = self._repos[name] = _Repo(self._shares.get(name, Share()))
        return repo

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def running(self, repo: str) -> int:
        return self._repo(repo).running

    def push(self, job: QueuedJob) -> None:
        if job.job_id in self._jobs:
            return
        repo = self._repo(job.repo)
        if repo.queued == 0:
            busy = [r.pass_ for r in self._repos.values() if r.queued]
            if busy:
                repo.pass_ = max(repo.pass_, min(busy))
        heapq.heappush(repo.heaps.setdefault((job.priority, job.labels), []), job.job_id)
        repo.queued += 1
        self._jobs[job.job_id] = job

    def remove(self, job_id: int) -> bool:
        """Forget a queued job; its heap entry is dropped lazily when it reaches the head."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            return False
        self._repos[job.repo].queued -= 1
        return True

    def started(self, repo: str) -> None:
        self._repo(repo).running += 1

    def finished(self, repo: str) -> None:
        r = self._repo(repo)
        r.running = max(0, r.running - 1)

    def _head(self, heap: list[int]) -> int | None:
        while heap and heap[0] not in self._jobs:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def _best(self, repo: _Repo, host_labels: frozenset[str] | None) -> tuple[int, int, list[int]] | None:
        """(priority, job id, heap) of the repo's next job that the host can take."""
        best = None
        for (priority, labels), heap in repo.heaps.items():
            if host_labels is not None and not labels <= host_labels:
                continue
            head = self._head(heap)
            if head is not None and (best is None or (priority, head) < best[:2]):
                best = (priority, head, heap)
        return best

    def pick(self, host_labels: frozenset[str]) -> QueuedJob | None:
        # Repos in share order; the first with a job this host can take wins (ties on
        # share go to the oldest head), so usually one repo's few heap heads are looked at.
        ranked = sorted(
            (r.running / r.share.weight, r.pass_, name)
            for name, r in self._repos.items()
            if r.queued and not (r.share.max_running and r.running >= r.share.max_running)
        )
        chosen: tuple[tuple[float, float, int], _Repo, list[int]] | None = None
        for share, pass_, name in ranked:
            if chosen is not None and (share, pass_) > chosen[0][:2]:
                break
            repo = self._repos[name]
            best = self._best(repo, host_labels)
            if best is not None and (chosen is None or (share, pass_, best[1]) < chosen[0]):
                chosen = ((share, pass_, best[1]), repo, best[2])
        if chosen is None:
            return None
        _, repo, heap = chosen
        job = self._jobs.pop(heapq.heappop(heap))
        repo.queued -= 1
        repo.running += 1
        repo.pass_ += 1 / repo.share.weight
        return job

    def order(self) -> list[QueuedJob]:
        """Every queued job in the order successive picks would take it, were a slot for
        every label set to free again and again; capped repos' extra jobs come last."""
        lanes = {
            name: sorted((self._jobs[i] for h in r.heaps.values() for i in set(h) if i in self._jobs),
                         key=lambda j: (j.priority, j.job_id), reverse=True)
            for name, r in self._repos.items() if r.queued
        }
        running = {name: self._repos[name].running for name in lanes}
        passes = {name: self._repos[name].pass_ for name in lanes}
        result: list[QueuedJob] = []
        for capped in (True, False):
            heap = [(running[n] / self._repos[n].share.weight, passes[n], lanes[n][-1].job_id, n)
                    for n in lanes if lanes[n]]
            heapq.heapify(heap)
            while heap:
                _, _, _, name = heapq.heappop(heap)
                repo = self._repos[name]
                if capped and repo.share.max_running and running[name] >= repo.share.max_running:
                    continue  # its remaining jobs wait for the second round
                result.append(lanes[name].pop())
                running[name] += 1
                passes[name] += 1 / repo.share.weight
                if lanes[name]:
                    heapq.heappush(heap, (running[name] / repo.share.weight, passes[name],
                                          lanes[name][-1].job_id, name))
        return result

    def explain(self, hosts: Sequence[HostView]) -> list[Waiting]:
        usable = [h for h in hosts if h.online and not h.draining]
        reasons: dict[tuple[str, frozenset[str]], str] = {}

        def reason(job: QueuedJob) -> str:
            key = (job.repo, job.labels)
            if key not in reasons:
                reasons[key] = self._reason(job, hosts, usable)
            return reasons[key]

        return [Waiting(job, i, reason(job)) for i, job in enumerate(self.order(), 1)]

    def _reason(self, job: QueuedJob, hosts: Sequence[HostView], usable: Sequence[HostView]) -> str:
        matching = [h for h in usable if job.labels <= h.labels]
        if not matching:
            if any(h.online and h.draining and job.labels <= h.labels for h in hosts):
                return "host draining"
            if not job.labels:
                return "no online host"
            return f"no online host has labels [{', '.join(sorted(job.labels))}]"
        repo = self._repos[job.repo]
        if repo.share.max_running and repo.running >= repo.share.max_running:
            return "repo at max_running"
        if not any(h.free_slots > 0 for h in matching):
            return "all matching slots busy"
        return "waiting for its turn"
