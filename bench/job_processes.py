"""Processes per job: how many processes one run of job.sh makes (forks, the first bash
included) and how many programs it executes, for a no-op job run plain, in a bubblewrap
sandbox and in a container, each the next job on a slot that already ran one (the
steady state). Each process costs ~1-3 ms of CPU on a host whose bash is slow; an SSH
host adds sshd's fork and exec of the login shell per command on top.
Counted with `strace -f` (every descendant, the detached supervisor too), run as root:
    .venv/bin/python bench/job_processes.py [--runs 3] [--show]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncci.config import load_config  # noqa: E402
from asyncci.hosts.base import JobRun  # noqa: E402
from asyncci.hosts.wrapper import FORGET, READ_WRAPPER, Wrapper  # noqa: E402
from asyncci.model import Confinement  # noqa: E402
from asyncci.server import KILL_GRACE_S  # noqa: E402
from tests.support.config import make_config  # noqa: E402
from tests.support.gitrepo import GitRepo  # noqa: E402
from tests.support.image import PODMAN, PODMAN_OPTIONS, available, build_image  # noqa: E402

MADE = re.compile(r"^(?:clone3?|v?fork)\(.*\) = (\d+)$")
RAN = re.compile(r'^execve\("([^"]*)".* = 0$')


def traced(data: bytes, out: Path) -> str:
    """Run the wrapper fed `data` under strace (one file per thread under `out`), as a
    host's server does: read the stream to its end, then say `forget`; its status line.
    The streams are FIFOs the wrapper opens itself: strace, which ends only once all it
    traces ended, holds no end of them."""
    out.mkdir()
    fifos = [out / name for name in ("in", "out", "err")]
    for fifo in fifos:
        os.mkfifo(fifo)
    proc = subprocess.Popen(
        ["strace", "-f", "-ff", "-qq", "-e", "trace=execve,clone,clone3,fork,vfork",
         "-o", str(out / "t"), "bash", "-c", f'exec <"$1" >"$2" 2>"$3"; {READ_WRAPPER}',
         str(len(data)), *map(str, fifos)], stdin=subprocess.DEVNULL)
    with open(fifos[0], "wb") as stdin, open(fifos[1], "rb") as stdout, \
            open(fifos[2], "rb") as stderr:
        stdin.write(data)
        stdin.flush()
        stdout.read()
        status = stderr.read().decode().strip().splitlines()[-1]
        stdin.write(FORGET)
    proc.wait(120)
    for fifo in fifos:
        fifo.unlink()
    return status


def count(out: Path) -> tuple[int, Counter[str]]:
    """(processes made, the first included; programs executed, by name)."""
    made, ran = 1, Counter[str]()
    for trace in out.iterdir():
        for line in trace.read_text(errors="replace").splitlines():
            if (m := MADE.match(line)) and "CLONE_THREAD" not in line and int(m[1]) > 0:
                made += 1
            elif m := RAN.match(line):
                ran[m[1].rsplit("/", 1)[-1]] += 1
    return made, ran


def measure(root: Path, repo: GitRepo, mode: str, runs: int, show: bool,
            **job: object) -> None:
    (root / mode).mkdir()
    host = load_config(make_config(root / mode, [{"name": "demo", "url": str(repo.path)}], hosts=[
        {"name": "local", "type": "local", "workdir": str(root / mode / "work"),
         "container_command": PODMAN, "container_options": PODMAN_OPTIONS}])).hosts[0]
    wrapper = Wrapper(host, host.workdir, KILL_GRACE_S)
    results = []
    for n in range(runs + 1):  # the first fills the mirror and the workspace
        run = JobRun(n + 1, 1, "demo", str(repo.path), repo.head(), "refs/heads/main", 0,
                     "true", **job)  # type: ignore[arg-type]
        status = traced(wrapper.input("start", run), root / mode / f"trace-{n}")
        assert status == "asyncci-exit 0", status
        if n:
            results.append(count(root / mode / f"trace-{n}"))
    made = sorted(r[0] for r in results)[len(results) // 2]
    ran = results[-1][1]
    print(f"  {mode:9s} {made:3d} processes, {sum(ran.values()):3d} programs run"
          + (f": {', '.join(f'{k} {v}' for k, v in ran.most_common())}" if show else ""))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3, help="jobs measured per mode (median)")
    parser.add_argument("--show", action="store_true", help="which programs, how often")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = GitRepo(root / "repo")
        repo.commit("bench", {f"src/f{i}.txt": f"file {i}\n" for i in range(100)})
        print("processes per job (no-op script, the slot's second job on)")
        measure(root, repo, "plain", args.runs, args.show)
        measure(root, repo, "sandbox", args.runs, args.show, confinement=Confinement.SANDBOX)
        if available():
            measure(root, repo, "container", args.runs, args.show,
                    confinement=Confinement.CONTAINER, image=build_image(root))
        else:
            print("  container: skipped (podman, runc, bash-static, busybox-static needed)")


if __name__ == "__main__":
    main()
