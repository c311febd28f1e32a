"""The fair queue of SPEC §4 as pure code: no asyncio, no I/O, nothing but bookkeeping.

Per repo, one heap of (priority, job id) per distinct label set: label sets are few, so a
pick looks at a handful of heap heads per repo, never at the jobs behind them.

Stride scheduling: a pick goes to the repo with the fewest running jobs per weight, then
the smallest pass, then the one that started a job least recently (a newcomer tied with a
busy repo gets the next slot, as SPEC's lone job must), then the oldest head; it advances
the repo's pass by 1/weight. A repo whose queue was empty re-enters at no less than the
smallest pass among repos with queued jobs, nor than the pass the latest job started at,
so idle time banks no credit even when the whole queue ran dry.

Each repo also keeps its jobs in one sorted list, so the pick order (positions, the queue
page) is walked lazily: the first k positions cost O(k log repos), whatever the queue holds.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from dataclasses import dataclass, field
from operator import attrgetter

from .config.checks import RESERVED_LABEL
from .model import Capability


@dataclass(frozen=True, slots=True)
class QueuedJob:
    job_id: int  # grows with age: FIFO order within a class
    repo: str
    priority: int  # Event.priority: 0 manual, 1 push/poll/cron, 2 pull_request
    labels: frozenset[str]  # the host must have all of them


@dataclass(frozen=True, slots=True)
class Share:
    weight: float = 1.0
    max_running: int = 0  # 0: no cap


@dataclass(frozen=True, slots=True)
class HostView:
    name: str
    labels: frozenset[str]  # with the capabilities it earned
    online: bool
    draining: bool
    free_slots: int
    engine: str = "podman"  # the container engine it would use


@dataclass(frozen=True, slots=True)
class Waiting:
    job: QueuedJob
    position: int  # 1-based, in pick order
    reason: str


_Entry = tuple[int, int]  # (priority, job id): a lane's heap order
_Lane = list[_Entry]


@dataclass(eq=False, slots=True)
class _Repo:
    name: str
    share: Share
    running: int = 0
    pass_: float = 0.0
    last_pick: int = -1  # when it last started a job, counted in picks
    rank: tuple[float, float, int] = (0.0, 0.0, -1)  # lower goes first
    lanes: dict[frozenset[str], _Lane] = field(default_factory=dict)  # by label set
    order: list[_Entry] = field(default_factory=list)  # every queued job, sorted

    @property
    def queued(self) -> int:
        return len(self.order)

    @property
    def capped(self) -> bool:
        return 0 < self.share.max_running <= self.running


_by_rank = attrgetter("rank")


class FairQueue:
    def __init__(self, shares: Mapping[str, Share]) -> None:
        self._shares = dict(shares)
        self._repos: dict[str, _Repo] = {}
        self._ready: dict[str, _Repo] = {}  # repos with queued jobs, below max_running
        self._jobs: dict[int, QueuedJob] = {}
        # A heap entry is live only while it is the very object recorded here: removal is
        # lazy, and a job removed and pushed again must not come back through its old entry.
        self._entries: dict[int, _Entry] = {}
        self._picks = 0
        self._last_pass = 0.0  # the pass at which the latest job started

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def running(self, repo: str) -> int:
        r = self._repos.get(repo)
        return r.running if r else 0

    def push(self, job: QueuedJob) -> None:
        """Queue a job at its age-ordered place in its class; a job already queued stays."""
        if job.job_id in self._jobs:
            return
        repo = self._repo(job.repo)
        if not repo.queued:
            busy = [r.pass_ for r in self._repos.values() if r.queued]
            repo.pass_ = max(repo.pass_, self._last_pass, min(busy, default=0.0))
        entry = (job.priority, job.job_id)
        heapq.heappush(repo.lanes.setdefault(job.labels, []), entry)
        insort(repo.order, entry)
        self._jobs[job.job_id] = job
        self._entries[job.job_id] = entry
        self._update(repo)

    def remove(self, job_id: int) -> bool:
        """Forget a queued job; its heap entry is dropped when it reaches a lane's head."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            return False
        repo = self._repos[job.repo]
        self._dequeued(repo, self._entries.pop(job_id))
        lane = repo.lanes.get(job.labels)
        if lane is not None and len(lane) > 2 * repo.queued + 32:
            # Mostly dead entries behind a head no host takes (cancelled while a gpu job
            # waits, say) would pile up for good: rebuild the lane. More than half of it
            # goes, each dropped entry paid for by its own remove(): O(1) amortised.
            lane[:] = [e for e in lane if self._entries.get(e[1]) is e]
            heapq.heapify(lane)
        return True

    def pick(self, host_labels: frozenset[str]) -> QueuedJob | None:
        ready = self._ready.values()
        front = min(map(_by_rank, ready), default=None)
        chosen = self._best([r for r in ready if r.rank == front], host_labels)
        if chosen is None:  # the host can take none of the front repos' jobs
            chosen = self._best(ready, host_labels)
        if chosen is None:
            return None
        repo, entry, lane = chosen
        heapq.heappop(lane)
        job = self._jobs.pop(entry[1])
        del self._entries[entry[1]]
        self._last_pass = repo.pass_
        repo.pass_ += 1 / repo.share.weight
        repo.running += 1
        repo.last_pick = self._picks
        self._picks += 1
        self._dequeued(repo, entry)
        return job

    def started(self, repo: str) -> None:
        r = self._repo(repo)
        r.running += 1
        self._update(r)

    def finished(self, repo: str) -> None:
        r = self._repos.get(repo)
        if r is not None and r.running > 0:
            r.running -= 1
            self._update(r)

    def _repo(self, name: str) -> _Repo:
        repo = self._repos.get(name)
        if repo is None:
            repo = self._repos[name] = _Repo(name, self._shares.get(name, Share()))
        return repo

    def _dequeued(self, repo: _Repo, entry: _Entry) -> None:
        del repo.order[bisect_left(repo.order, entry)]
        if not repo.queued:
            repo.lanes.clear()  # only dead entries are left: drop them at once
        self._update(repo)

    def _update(self, repo: _Repo) -> None:
        repo.rank = (repo.running / repo.share.weight, repo.pass_, repo.last_pick)
        if repo.queued and not repo.capped:
            self._ready[repo.name] = repo
        else:
            self._ready.pop(repo.name, None)

    def _best(self, repos: Iterable[_Repo], host_labels: frozenset[str]
              ) -> tuple[_Repo, _Entry, _Lane] | None:
        """The repo first in rank, then by oldest head, that has a job this host can take."""
        chosen: tuple[_Repo, _Entry, _Lane] | None = None
        for repo in repos:
            head = self._head(repo, host_labels)
            if head is not None and (chosen is None or (repo.rank, head[0][1])
                                     < (chosen[0].rank, chosen[1][1])):
                chosen = (repo, *head)
        return chosen

    def _head(self, repo: _Repo, host_labels: frozenset[str]) -> tuple[_Entry, _Lane] | None:
        """The repo's best entry among the lanes this host can take, and its lane."""
        best: tuple[_Entry, _Lane] | None = None
        for labels, lane in repo.lanes.items():
            if not labels <= host_labels:
                continue
            while lane and self._entries.get(lane[0][1]) is not lane[0]:
                heapq.heappop(lane)
            if lane and (best is None or lane[0] < best[0]):
                best = (lane[0], lane)
        return best

    def _order(self) -> Iterator[QueuedJob]:
        """Every queued job in the order successive picks by a host with every label would
        take it, none finishing; capped repos' jobs past their cap come after all others.
        Lazy: a caller that stops early pays only for what it took."""
        names = [name for name, repo in self._repos.items() if repo.queued]
        taken = dict.fromkeys(names, 0)  # how many of each repo's jobs the walk took
        state = {n: (self._repos[n].running, self._repos[n].pass_, self._repos[n].last_pick)
                 for n in names}  # running, pass, last pick: as pick() would leave them
        picks = self._picks

        def key(name: str) -> tuple[float, float, int, int, str]:
            running, pass_, last_pick = state[name]
            repo = self._repos[name]
            return (running / repo.share.weight, pass_, last_pick,
                    repo.order[taken[name]][1], name)

        for respect_caps in (True, False):
            heap = [key(n) for n in names if taken[n] < len(self._repos[n].order)]
            heapq.heapify(heap)
            while heap:
                name = heapq.heappop(heap)[-1]
                repo = self._repos[name]
                if respect_caps and 0 < repo.share.max_running <= state[name][0]:
                    continue  # its remaining jobs wait for the second round
                yield self._jobs[repo.order[taken[name]][1]]
                taken[name] += 1
                state[name] = (state[name][0] + 1, state[name][1] + 1 / repo.share.weight,
                               picks)
                picks += 1
                if taken[name] < len(repo.order):
                    heapq.heappush(heap, key(name))

    def explain(self, hosts: Sequence[HostView], offset: int = 0, limit: int | None = None
                ) -> list[Waiting]:
        """A page of the queue in pick order, each job with its position and reason."""
        reasons: dict[tuple[str, frozenset[str]], str] = {}
        stop = None if limit is None else offset + limit
        return [Waiting(job, position, self._cached_reason(job, hosts, reasons))
                for position, job in islice(enumerate(self._order(), 1), offset, stop)]

    def positions(self, job_ids: Collection[int], hosts: Sequence[HostView], bound: int
                  ) -> dict[int, Waiting | str]:
        """Where the given jobs stand, walking at most `bound` positions (a job further
        back gets its reason alone): what a status says the moment a job is queued."""
        wanted = {j for j in job_ids if j in self._jobs}
        reasons: dict[tuple[str, frozenset[str]], str] = {}
        found: dict[int, Waiting | str] = {}
        for position, job in enumerate(islice(self._order(), bound) if wanted else (), 1):
            if job.job_id in wanted:
                found[job.job_id] = Waiting(job, position, self._cached_reason(job, hosts, reasons))
                if len(found) == len(wanted):
                    break
        for job_id in wanted - found.keys():
            found[job_id] = self._cached_reason(self._jobs[job_id], hosts, reasons)
        return found

    def _cached_reason(self, job: QueuedJob, hosts: Sequence[HostView],
                       reasons: dict[tuple[str, frozenset[str]], str]) -> str:
        key = (job.repo, job.labels)
        if key not in reasons:
            reasons[key] = self._reason(job, hosts)
        return reasons[key]

    def _reason(self, job: QueuedJob, hosts: Sequence[HostView]) -> str:
        if Capability.APPROVED in job.labels:
            return "waiting for approval"
        labels = frozenset(x for x in job.labels if not x.startswith(RESERVED_LABEL))
        able = [h for h in hosts if labels <= h.labels]
        usable = [h for h in able if h.online and not h.draining]
        if not usable:
            if any(h.draining for h in able):
                return "host draining"
            if not labels:
                return "no online host"
            return f"no online host has labels [{', '.join(sorted(labels))}]"
        if not any(job.labels <= h.labels for h in usable):
            return _missing(job.labels, usable)
        if self._repos[job.repo].capped:
            return "repo at max_running"
        if not any(h.free_slots > 0 for h in usable):
            return "all matching slots busy"
        return "waiting for its turn"


def _missing(labels: frozenset[str], hosts: Sequence[HostView]) -> str:
    """Why no host that has a job's labels takes it: a capability none of them has."""
    if Capability.UNTRUSTED in labels and not any(Capability.UNTRUSTED in h.labels for h in hosts):
        return "no online host takes untrusted builds"
    if Capability.CONTAINER in labels:
        engines = " or ".join(sorted({h.engine for h in hosts}))
        return f"no online host can confine it (needs {engines})"
    return "no online host can confine it (needs bwrap)"
