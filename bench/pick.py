"""Microseconds per FairQueue.pick() with 1k, 10k and 100k jobs queued over 50 repos.

Steady state: each pick is followed by finished() and the push of a fresh job, so the
queue keeps its size; hosts with different label sets take turns. A batch times 200 such
cycles (pick + finished + push, so the figure is an upper bound for pick alone); the line
shows the median batch, per pick, then what the queue's explanations cost: all of it at
once, the first page (what /api/queue answers by default), a page deep in the queue, and
where a newly pushed job stands (what its first status says, walked at most WALK_BOUND).
SPEC §4: well under 100 µs at 100k, growing no faster than log n. Run from the repo root:
    PYTHONPATH=. python bench/pick.py
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncci.fairqueue import FairQueue, HostView, QueuedJob, Share  # noqa: E402
from asyncci.scheduler import WALK_BOUND  # noqa: E402

REPOS = 50
BATCH = 200  # cycles per timed batch
BATCHES = 100
PAGE = 100  # /api/queue's default page
LABELS = [frozenset(), frozenset({"linux"}), frozenset({"gpu"}), frozenset({"linux", "arm"})]
HOSTS = [frozenset({"linux", "gpu", "arm"}), frozenset({"linux"}), frozenset({"linux", "gpu"}),
         frozenset({"linux", "arm"})]


def measure(size: int, rng: random.Random) -> tuple[float, dict[str, float]]:
    """(median µs per pick, ms for each kind of explanation) with `size` jobs queued."""
    shares = {f"r{i}": Share(rng.randint(1, 3), rng.choice([0, 0, 0, 4])) for i in range(REPOS)}
    queue = FairQueue(shares)
    next_id = 0

    def push() -> None:
        nonlocal next_id
        next_id += 1
        queue.push(QueuedJob(next_id, f"r{rng.randrange(REPOS)}", rng.choice([0, 1, 1, 1, 2]),
                             rng.choice(LABELS)))

    for _ in range(size):
        push()
    clock = time.perf_counter_ns
    batches, n = [], 0
    for _ in range(BATCHES):
        started = clock()
        for _ in range(BATCH):
            picked = queue.pick(HOSTS[n % len(HOSTS)])
            n += 1
            if picked is not None:
                queue.finished(picked.repo)
                push()
        batches.append((clock() - started) / BATCH)
    assert len(queue) == size
    hosts = [HostView(f"h{i}", labels, True, False, 0) for i, labels in enumerate(HOSTS)]
    push()
    calls = {"all": lambda: queue.explain(hosts),
             "page": lambda: queue.explain(hosts, 0, PAGE),
             "deep page": lambda: queue.explain(hosts, size // 2, PAGE),
             "new job": lambda: queue.positions([next_id], hosts, WALK_BOUND)}
    explained = {}
    for name, call in calls.items():
        started = clock()
        call()
        explained[name] = (clock() - started) / 1e6
    return statistics.median(batches) / 1e3, explained


def main() -> None:
    for size in (1_000, 10_000, 100_000):
        per_pick, explained = measure(size, random.Random(size))
        print(f"pick  {size:>6} jobs  {REPOS} repos:  {per_pick:5.1f} µs/pick  explain ms: "
              + ", ".join(f"{name} {ms:.1f}" for name, ms in explained.items()))


if __name__ == "__main__":
    main()
