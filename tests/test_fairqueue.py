"""The fair queue's promises (SPEC §4), checked without an event loop."""

from __future__ import annotations

import copy
import itertools
import tracemalloc
from collections import Counter, defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from asyncci.fairqueue import FairQueue, HostView, QueuedJob, Share
from asyncci.model import Event

ANY = frozenset({"gpu", "linux", "arm"})
GPU = frozenset({"gpu"})
ids = itertools.count(1)


def job(repo: str, priority: int = 1, labels: frozenset[str] = frozenset()) -> QueuedJob:
    return QueuedJob(next(ids), repo, priority, labels)


def filled(shares: dict[str, Share], per_repo: int) -> FairQueue:
    queue = FairQueue(shares)
    for _ in range(per_repo):
        for repo in shares:
            queue.push(job(repo))
    return queue


def one_slot(queue: FairQueue, picks: int) -> list[str]:
    """Repos in the order a single slot runs them (each job ends before the next pick)."""
    order = []
    for _ in range(picks):
        picked = queue.pick(ANY)
        assert picked is not None
        order.append(picked.repo)
        queue.finished(picked.repo)
    return order


def alternates(order: list[str]) -> bool:
    return all(x != y for x, y in zip(order, order[1:]))


def test_two_busy_repos_alternate_on_one_slot() -> None:
    order = one_slot(filled({"a": Share(), "b": Share()}, 50), 40)
    assert alternates(order) and order[0] == "a"  # the oldest head breaks the first tie


def test_weights_share_slots_two_to_one() -> None:
    counts = Counter(one_slot(filled({"a": Share(2), "b": Share(1)}, 400), 300))
    assert abs(counts["a"] - 200) <= 1 and abs(counts["b"] - 100) <= 1


def test_fewest_running_per_weight_goes_first_with_many_slots() -> None:
    queue = filled({"a": Share(2), "b": Share(1)}, 20)
    picked = Counter(p.repo for p in (queue.pick(ANY) for _ in range(9)) if p)
    assert picked == {"a": 6, "b": 3}


def test_idle_repo_banks_no_credit() -> None:
    queue = FairQueue({})
    for _ in range(200):
        queue.push(job("a"))
    assert set(one_slot(queue, 100)) == {"a"}  # b idle all along
    for _ in range(100):
        queue.push(job("b"))
    order = one_slot(queue, 20)
    assert alternates(order) and order[0] == "b"  # not a hundred b's in a row


def test_a_queue_that_ran_dry_banks_no_credit_either() -> None:
    queue = FairQueue({})
    for _ in range(100):
        queue.push(job("b"))
    one_slot(queue, 100)  # b alone, then nothing queued at all
    for _ in range(50):
        queue.push(job("a"))
    for _ in range(50):
        queue.push(job("b"))
    assert alternates(one_slot(queue, 20))  # a's idle night bought it no run of its own


def test_a_lone_job_does_not_wait_behind_thousands() -> None:
    for slots in (1, 2):
        queue = FairQueue({})
        for _ in range(10_000):
            queue.push(job("a"))
        first = queue.pick(ANY)
        assert first is not None and first.repo == "a"
        lone = job("b")
        queue.push(lone)
        if slots == 1:
            queue.finished("a")  # the only slot frees
        assert queue.pick(ANY) == lone  # before a's second job


def test_priority_classes_then_fifo_within_a_repo() -> None:
    queue = FairQueue({})
    pr, push, manual, cron, manual2, poll = (
        job("a", e.priority) for e in (Event.PULL_REQUEST, Event.PUSH, Event.MANUAL,
                                       Event.CRON, Event.MANUAL, Event.POLL))
    for j in (pr, push, manual, cron, manual2, poll):
        queue.push(j)
    assert [queue.pick(ANY) for _ in range(7)] == [manual, manual2, push, cron, poll, pr, None]


def test_requeued_job_goes_back_to_its_place_and_removed_jobs_never_run() -> None:
    queue = FairQueue({})
    old, a, b, c = job("r"), job("r"), job("r"), job("r")
    for j in (a, b, c):
        queue.push(j)
    assert queue.remove(a.job_id) and not queue.remove(a.job_id) and a.job_id not in queue
    queue.push(old)  # re-queued after a lost host: older than everything queued
    queue.push(old)  # pushing a queued job again changes nothing
    assert len(queue) == 3 and old.job_id in queue
    assert [queue.pick(ANY) for _ in range(4)] == [old, b, c, None]
    queue.push(b)  # picked, then lost with its host: back before newer jobs of its class
    queue.push(d := job("r"))
    assert [queue.pick(ANY), queue.pick(ANY)] == [b, d]


def test_a_removed_job_pushed_again_is_queued_as_pushed_the_second_time() -> None:
    queue = FairQueue({})
    plain, other = job("a"), job("a", labels=GPU)
    queue.push(plain)
    queue.push(other)
    assert queue.remove(plain.job_id)
    needs_gpu = QueuedJob(plain.job_id, "a", 1, GPU)
    queue.push(needs_gpu)
    assert queue.pick(frozenset({"linux"})) is None  # its old, label-free entry is dead
    assert [queue.pick(GPU), queue.pick(GPU), len(queue)] == [needs_gpu, other, 0]


def test_cancelled_jobs_leave_nothing_behind_a_job_no_host_takes() -> None:
    queue = FairQueue({})
    queue.push(stuck := job("a", labels=GPU))  # the gpu host is offline
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20_000):  # superseded PR builds, each cancelled while queued
            queue.push(cancelled := job("a", 2, GPU))
            assert queue.remove(cancelled.job_id)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100_000  # 20,000 dead heap entries kept would take ~2 MB
    assert len(queue) == 1 and queue.pick(GPU) == stuck and queue.pick(GPU) is None


def test_labels_route_jobs() -> None:
    queue = FairQueue({})
    gpu, plain = job("a", labels=GPU), job("a")
    queue.push(gpu)
    queue.push(plain)
    assert queue.pick(frozenset({"linux"})) == plain
    assert queue.pick(frozenset({"linux"})) is None
    assert queue.pick(frozenset({"gpu", "linux"})) == gpu


def test_a_host_takes_the_next_repo_when_the_first_has_nothing_for_it() -> None:
    queue = FairQueue({})
    queue.push(job("a", labels=GPU))
    queue.push(plain := job("b"))
    queue.push(job("c", labels=GPU))
    assert queue.pick(frozenset({"linux"})) == plain


def test_max_running_caps_a_repo_and_counts_reattached_jobs() -> None:
    queue = filled({"capped": Share(1, 2), "free": Share()}, 5)
    queue.started("capped")  # reattached after a restart
    picked = [queue.pick(ANY) for _ in range(7)]
    assert Counter(p.repo for p in picked if p) == {"capped": 1, "free": 5}
    assert picked[-1] is None and queue.running("capped") == 2
    queue.finished("capped")
    assert (p := queue.pick(ANY)) is not None and p.repo == "capped"


def test_a_max_running_of_zero_is_no_cap() -> None:
    queue = filled({"free": Share(1, 0)}, 3)
    assert [p.repo for p in (queue.pick(ANY) for _ in range(3)) if p] == ["free"] * 3


def rank(j: QueuedJob) -> tuple[int, int]:
    return j.priority, j.job_id


class Model:
    """SPEC §4 by brute force over every queued job, to hold FairQueue to."""

    def __init__(self, shares: dict[str, Share]) -> None:
        self.shares = shares
        self.queued: dict[int, QueuedJob] = {}
        self.running: Counter[str] = Counter()
        self.passes: defaultdict[str, float] = defaultdict(float)
        self.last_pick: dict[str, int] = {}
        self.picks, self.last_pass = 0, 0.0

    def push(self, j: QueuedJob) -> None:
        if not any(q.repo == j.repo for q in self.queued.values()):
            busy = [self.passes[q.repo] for q in self.queued.values()]
            self.passes[j.repo] = max(self.passes[j.repo], self.last_pass, min(busy, default=0.0))
        self.queued[j.job_id] = j

    def capped(self, repo: str) -> bool:
        return 0 < self.shares[repo].max_running <= self.running[repo]

    def pick(self, host: frozenset[str]) -> QueuedJob | None:
        fits = [j for j in self.queued.values() if j.labels <= host and not self.capped(j.repo)]
        heads = {r: min((j for j in fits if j.repo == r), key=rank)
                 for r in {j.repo for j in fits}}
        if not heads:
            return None
        best = min(heads.values(), key=lambda j: (
            self.running[j.repo] / self.shares[j.repo].weight, self.passes[j.repo],
            self.last_pick.get(j.repo, -1), j.job_id))
        del self.queued[best.job_id]
        self.last_pass = self.passes[best.repo]
        self.passes[best.repo] += 1 / self.shares[best.repo].weight
        self.running[best.repo] += 1
        self.last_pick[best.repo], self.picks = self.picks, self.picks + 1
        return best


LABEL_SETS = [frozenset(), GPU, frozenset({"arm"}), frozenset({"gpu", "arm"})]
SHARES = {"r0": Share(1, 2), "r1": Share(2, 0), "r2": Share(1, 1), "r3": Share(3, 0)}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ppprfqsx"), st.integers(0, 3), st.integers(0, 3),
                          st.integers(0, 2)), max_size=150))
def test_picks_follow_the_rules_under_any_sequence(ops: list[tuple[str, int, int, int]]) -> None:
    queue, model = FairQueue(SHARES), Model(SHARES)
    ran: list[QueuedJob] = []  # picked and still running, so it may be re-queued
    removed: set[int] = set()
    for op, repo_n, labels_n, n in ops:
        repo = f"r{repo_n}"
        if op == "p":
            new = job(repo, n, LABEL_SETS[labels_n])
            queue.push(new)
            model.push(new)
        elif op == "r":
            victim = sorted(model.queued)[labels_n % len(model.queued)] if model.queued else -1
            assert queue.remove(victim) == (victim in model.queued)
            model.queued.pop(victim, None)
            removed.add(victim)
        elif op == "f" and ran:
            done = ran.pop(labels_n % len(ran))
            queue.finished(done.repo)
            model.running[done.repo] -= 1
        elif op == "q" and ran:  # lost with its host: re-queued under its old id
            lost = ran.pop(labels_n % len(ran))
            queue.finished(lost.repo)
            model.running[lost.repo] -= 1
            queue.push(lost)
            model.push(lost)
        elif op == "s":  # reattached after a restart
            queue.started(repo)
            model.running[repo] += 1
            ran.append(job(repo, n, LABEL_SETS[labels_n]))
        else:
            host = ANY if n == 0 else LABEL_SETS[labels_n]
            fits = [j for j in model.queued.values() if j.labels <= host]
            takers = {j.repo for j in fits if not model.capped(j.repo)}
            picked, expected = queue.pick(host), model.pick(host)
            assert picked == expected
            if picked is None:
                assert not takers  # a host is never left idle while a job fits it
            else:
                assert picked.labels <= host and picked.job_id not in removed
                assert picked.repo in takers  # never from a repo at its cap
                assert picked == min((j for j in fits if j.repo == picked.repo), key=rank)
                cap = SHARES[picked.repo].max_running
                assert not cap or queue.running(picked.repo) <= cap
                ran.append(picked)
        assert len(queue) == len(model.queued)
        assert all(queue.running(r) == model.running[r] for r in SHARES)
    assert_explain_matches_picks(queue)


def assert_explain_matches_picks(queue: FairQueue) -> None:
    """explain() lists every queued job once, in the order picks would take them."""
    hosts = [HostView("h", ANY, True, False, 1)]
    waiting = queue.explain(hosts)
    assert [w.position for w in waiting] == list(range(1, len(queue) + 1))
    assert len({w.job.job_id for w in waiting}) == len(queue)
    assert all(w.job.job_id in queue and w.reason for w in waiting)
    trial = copy.deepcopy(queue)
    picks = list(iter(lambda: trial.pick(ANY), None))
    assert [w.job for w in waiting[:len(picks)]] == picks
    assert all(w.reason == "repo at max_running" or SHARES[w.job.repo].max_running
               for w in waiting[len(picks):])  # the rest wait on their repo's cap


def test_explain_gives_every_job_a_position_and_a_reason() -> None:
    queue = FairQueue({"capped": Share(1, 1)})
    jobs = [job("free"), job("capped"), job("capped"), job("free", labels=GPU),
            job("free", labels=frozenset({"arm"})), job("free", labels=frozenset({"x86", "big"}))]
    for j in jobs:
        queue.push(j)
    queue.started("capped")
    hosts = [HostView("busy", frozenset({"linux"}), True, False, 0),
             HostView("gpu1", GPU, False, False, 1),
             HostView("arm1", frozenset({"arm"}), True, True, 1)]
    waiting = queue.explain(hosts)
    assert [w.position for w in waiting] == list(range(1, len(jobs) + 1))
    assert sorted(w.job.job_id for w in waiting) == sorted(j.job_id for j in jobs)
    reasons = {w.job.job_id: w.reason for w in waiting}
    assert reasons[jobs[0].job_id] == "all matching slots busy"
    assert reasons[jobs[1].job_id] == reasons[jobs[2].job_id] == "repo at max_running"
    assert reasons[jobs[3].job_id] == "no online host has labels [gpu]"
    assert reasons[jobs[4].job_id] == "host draining"
    assert reasons[jobs[5].job_id] == "no online host has labels [big, x86]"
    # the capped repo's jobs come after everything the free repo could run
    assert [w.job.repo for w in waiting][-2:] == ["capped", "capped"]


def test_explain_says_waiting_for_its_turn_when_a_slot_is_free() -> None:
    queue = filled({"a": Share(), "b": Share()}, 2)
    waiting = queue.explain([HostView("h", frozenset(), True, False, 1)])
    assert [w.job.repo for w in waiting] == ["a", "b", "a", "b"]
    assert {w.reason for w in waiting} == {"waiting for its turn"}
    assert {w.reason for w in queue.explain([])} == {"no online host"}
