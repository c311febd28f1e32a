"""Microseconds per FairQueue.pick() with 1k, 10k and 100k jobs queued over 50 repos.

Steady state: each pick is followed by finished() and a fresh push, so the queue keeps its
size; hosts with different label sets take turns. Prints the median over 20,000 picks,
and how long one explain() of the whole queue takes. Run from the repository root:
    .venv/bin/python bench/pick.py
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncci.fairqueue import FairQueue, HostView, QueuedJob, Share  # noqa: E402

REPOS = 50
PICKS = 20_000
LABELS = [frozenset(), frozenset({"linux"}), frozenset({"gpu"}), frozenset({"linux", "arm"})]
HOSTS = [frozenset({"linux", "gpu", "arm"}), frozenset({"linux"}), frozenset({"linux", "gpu"}),
         frozenset({"linux", "arm"})]


def measure(size: int, rng: random.Random) -> tuple[float, float]:
    """(median µs per pick, ms for one explain) with `size` jobs queued."""
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
    timings = []
    for n in range(PICKS):
        host = HOSTS[n % len(HOSTS)]
        started = clock()
        picked = queue.pick(host)
        timings.append(clock() - started)
        if picked is not None:
            queue.finished(picked.repo)
            push()
    hosts = [HostView(f"h{i}", labels, True, False, 0) for i, labels in enumerate(HOSTS)]
    started = clock()
    queue.explain(hosts)
    return statistics.median(timings) / 1e3, (clock() - started) / 1e6


def main() -> None:
    for size in (1_000, 10_000, 100_000):
        per_pick, explain_ms = measure(size, random.Random(size))
        print(f"pick  {size:>6} jobs  {REPOS} repos:  {per_pick:5.1f} µs/pick"
              f"  (explain of all: {explain_ms:.0f} ms)")


if __name__ == "__main__":
    main()
