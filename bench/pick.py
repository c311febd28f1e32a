"""Microseconds per FairQueue.pick() with 1k, 10k and 100k jobs queued over 50 repos.

Steady state: each pick is followed by finished() and a push, so the size stays put.
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
LABELS = [frozenset(), frozenset({"linux"}), frozenset({"gpu"}), frozenset({"linux", "arm"})]
HOST = frozenset({"linux", "gpu"})


def measure(size: int, rng: random.Random) -> tuple[float, float]:
    queue = FairQueue({f"r{i}": Share(rng.randint(1, 3), rng.choice([0, 0, 4])) for i in range(REPOS)})
    next_id = 0

    def push() -> None:
        nonlocal next_id
        next_id += 1
        queue.push(QueuedJob(next_id, f"r{rng.randrange(REPOS)}", rng.choice([0, 1, 1, 2]),
                             rng.choice(LABELS)))

    for _ in range(size):
        push()
    batches = []
    for _ in range(50):
        started = time.perf_counter()
        for _ in range(200):
            picked = queue.pick(HOST)
            if picked is not None:
                queue.finished(picked.repo)
        batches.append((time.perf_counter() - started) / 200)
        for _ in range(200):
            push()
    hosts = [HostView("h", HOST, True, False, 0)]
    started = time.perf_counter()
    queue.explain(hosts)
    return statistics.median(batches) * 1e6, (time.perf_counter() - started) * 1e3


def main() -> None:
    rng = random.Random(1)
    for size in (1_000, 10_000, 100_000):
        per_pick, explain_ms = measure(size, rng)
        print(f"pick  {size:>6} jobs  {REPOS} repos:  {per_pick:6.1f} µs/pick"
              f"  (explain: {explain_ms:.0f} ms)")


if __name__ == "__main__":
    main()
