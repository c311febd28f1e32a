"""A tiny container image for tests, made offline with `podman import` from Debian's
bash-static and busybox-static: never pulled from a registry."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

# How podman runs on these machines (crun and raised rlimits are refused here).
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
PODMAN_OPTIONS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
IMAGE = "localhost/asyncci-test:1"
MARKER = "this file is the image's own"
TOOLS = ["sh", "cat", "ls", "echo", "sleep", "true", "pwd", "tr", "cut", "grep", "head",
         "touch", "id", "wc"]


def available() -> bool:
    return all(shutil.which(t) for t in ("podman", "runc")) and \
        Path("/bin/bash-static").exists() and Path("/bin/busybox").exists()


def build_image(tmp: Path) -> str:
    """IMAGE, imported once: /bin/bash, busybox's tools and /etc/asyncci-image."""
    root = tmp / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "tmp").mkdir()
    shutil.copy("/bin/bash-static", root / "bin" / "bash")
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for tool in TOOLS:
        (root / "bin" / tool).symlink_to("busybox")
    (root / "etc" / "asyncci-image").write_text(MARKER + "\n")
    archive = tmp / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname=".")
    subprocess.run([*PODMAN, "import", "--change", "ENV PATH=/bin", str(archive), IMAGE],
                   check=True, capture_output=True, timeout=60)
    return IMAGE


def containers() -> list[str]:
    """Names of asyncci's containers that exist, running or not."""
    out = subprocess.run([*PODMAN, "ps", "-a", "--format", "{{.Names}}"], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return [name for name in out.split() if name.startswith("asyncci-")]
