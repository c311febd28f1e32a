"""The fair queue's promises (SPEC §4), checked without an event loop."""

from __future__ import annotations

import itertools
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from asyncci.fairqueue import FairQueue, HostView, QueuedJob, Share

ANY = frozenset({"gpu", "linux"})
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


def test_two_busy_repos_alternate_on_one_slot() -> None:
    order = one_slot(filled({"a": Share(), "b": Share()}, 50), 20)
    assert all(x != y for x, y in zip(order, order[1:]))


def test_weights_share_slots_two_to_one() -> None:
    counts = Counter(one_slot(filled({"a": Share(2), "b": Share(1)}, 400), 300))
    assert abs(counts["a"] - 200) <= 1 and abs(counts["b"] - 100) <= 1


def test_idle_time_banks_no_credit() -> None:
    queue = filled({"a": Share(), "b": Share()}, 0)
    for _ in range(200):
        queue.push(job("a"))
    one_slot(queue, 100)  # only a had work
    for _ in range(10):
        queue.push(job("b"))
    order = one_slot(queue, 10)
    assert order.count("b") <= 6  # alternation, not ten b's in a row


def test_a_single_job_does_not_wait_behind_thousands() -> None:
    queue = FairQueue({})
    for _ in range(10_000):
        queue.push(job("a"))
    first = queue.pick(ANY)
    lone = job("b")
    queue.push(lone)
    assert first is not None and queue.pick(ANY) == lone


def test_priorities_then_age_within_a_repo() -> None:
    queue = FairQueue({})
    pr, push, manual, push2 = job("a", 2), job("a", 1), job("a", 0), job("a", 1)
    for j in (pr, push, manual, push2):
        queue.push(j)
    assert [queue.pick(ANY) for _ in range(4)] == [manual, push, push2, pr]


def test_requeued_job_goes_back_to_its_place_and_removed_jobs_never_run() -> None:
    queue = FairQueue({})
    old, a, b = job("r"), job("r"), job("r")
    for j in (a, b):
        queue.push(j)
    assert queue.remove(a.job_id) and not queue.remove(a.job_id)
    queue.push(old)  # re-queued after a lost host: older than b
    assert len(queue) == 2 and a.job_id not in queue
    assert [queue.pick(ANY), queue.pick(ANY), queue.pick(ANY)] == [old, b, None]


def test_labels_route_jobs() -> None:
    queue = FairQueue({})
    gpu, plain = job("a", labels=frozenset({"gpu"})), job("a")
    queue.push(gpu)
    queue.push(plain)
    assert queue.pick(frozenset({"linux"})) == plain
    assert queue.pick(frozenset({"linux"})) is None
    assert queue.pick(frozenset({"gpu", "linux"})) == gpu


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("pprf"), st.integers(0, 2), st.integers(0, 3),
                          st.booleans()), max_size=120))
def test_invariants_under_any_sequence(ops: list[tuple[str, int, int, bool]]) -> None:
    shares = {"r0": Share(1, 2), "r1": Share(2, 0), "r2": Share(1, 1)}
    label_sets = [frozenset(), frozenset({"gpu"}), frozenset({"arm"}), frozenset({"gpu", "arm"})]
    queue, queued, running = FairQueue(shares), {}, Counter()
    for op, repo_n, labels_n, flag in ops:
        repo = f"r{repo_n}"
        if op == "p":
            new = job(repo, repo_n % 3, label_sets[labels_n])
            queue.push(new)
            queued[new.job_id] = new
        elif op == "r" and queued:
            victim = sorted(queued)[labels_n % len(queued)]
            assert queue.remove(victim)
            del queued[victim]
        elif op == "f" and running[repo]:
            queue.finished(repo)
            running[repo] -= 1
        else:
            host = label_sets[labels_n] if flag else ANY | {"arm"}
            picked = queue.pick(host)
            if picked is None:
                assert not [j for j in queued.values() if j.labels <= host and (
                    not shares[j.repo].max_running or running[j.repo] < shares[j.repo].max_running)]
                continue
            assert picked.job_id in queued and picked.labels <= host
            same_repo = [j for j in queued.values() if j.repo == picked.repo and j.labels <= host]
            assert (picked.priority, picked.job_id) == min((j.priority, j.job_id) for j in same_repo)
            del queued[picked.job_id]
            running[picked.repo] += 1
            cap = shares[picked.repo].max_running
            assert not cap or running[picked.repo] <= cap
        assert len(queue) == len(queued)


def test_explain_gives_every_job_a_position_and_a_reason() -> None:
    queue = FairQueue({"capped": Share(1, 1)})
    jobs = [job("free"), job("capped"), job("capped"), job("free", labels=frozenset({"gpu"})),
            job("free", labels=frozenset({"arm"})), job("free", labels=frozenset({"big"}))]
    for j in jobs:
        queue.push(j)
    queue.started("capped")
    hosts = [HostView("busy", frozenset({"linux"}), True, False, 0),
             HostView("gpu1", frozenset({"gpu"}), False, False, 1),
             HostView("arm1", frozenset({"arm"}), True, True, 1)]
    waiting = queue.explain(hosts)
    assert [w.position for w in waiting] == list(range(1, len(jobs) + 1))
    assert sorted(w.job.job_id for w in waiting) == sorted(j.job_id for j in jobs)
    reasons = {w.job.job_id: w.reason for w in waiting}
    assert reasons[jobs[0].job_id] == "all matching slots busy"
    assert reasons[jobs[1].job_id] == reasons[jobs[2].job_id] == "repo at max_running"
    assert reasons[jobs[3].job_id] == "no online host has labels [gpu]"
    assert reasons[jobs[4].job_id] == "host draining"
    assert reasons[jobs[5].job_id] == "no online host has labels [big]"
    # the capped repo's jobs come after everything the free repo can run
    assert [w.job.repo for w in waiting][-1] == "capped"
