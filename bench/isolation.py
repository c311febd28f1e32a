"""What confinement costs: the same no-op builds on a local host run plain, in a bubblewrap
sandbox (`isolation = "all"`) and in a container (`image`), in one run, against bare
`podman run --rm IMAGE true` at the same concurrency.

Prints jobs/s and the milliseconds each way adds per job. Run from the repository root:
    .venv/bin/python bench/isolation.py [--builds 200] [--slots 4]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throughput import bench_server  # noqa: E402
from tests.support.image import PODMAN, PODMAN_OPTIONS, build_image  # noqa: E402


async def bare_podman(image: str, runs: int, slots: int) -> float:
    """Seconds for `runs` bare `podman run --rm IMAGE true`, `slots` at a time."""
    gate = asyncio.Semaphore(slots)

    async def one() -> None:
        async with gate:
            proc = await asyncio.create_subprocess_exec(
                *PODMAN, "run", "--rm", *PODMAN_OPTIONS, image, "true",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            assert await proc.wait() == 0

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(runs)))
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--builds", type=int, default=200)
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        image = build_image(Path(tmp))
        rates = {}
        for mode, keys in (("plain", {}), ("sandbox", {"isolation": "all"}),
                           ("container", {"image": image})):
            root = Path(tmp) / mode
            hosts = [{"name": "local", "type": "local", "slots": args.slots,
                      "workdir": str(root / "work"), "container_command": PODMAN,
                      "container_options": PODMAN_OPTIONS}]
            seconds = bench_server(root, hosts, args.builds, **keys).seconds
            rates[mode] = args.builds / seconds
        bare = args.builds / asyncio.run(bare_podman(image, args.builds, args.slots))
    print(f"isolation  {args.builds} no-op jobs, local host, {args.slots} slots")
    for mode, rate in rates.items():
        added = 1000 * (1 / rate - 1 / rates["plain"])
        print(f"  {mode:9s} {rate:6.1f} jobs/s   {added:+6.1f} ms per job against plain")
    print(f"  bare `podman run --rm IMAGE true`: {bare:.1f} runs/s; a container job costs"
          f" {bare / rates['container']:.2f}x one")


if __name__ == "__main__":
    main()
