"""A real OpenSSH server on 127.0.0.1 for tests: its own host key, a client key, a
known_hosts file, a free port, and `SetEnv SHLVL=1` so root's slow ~/.bashrc is skipped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from .config import free_port

SSHD = "/usr/sbin/sshd"


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, timeout=30)
    return path.with_suffix(".pub").read_text().strip()


class Sshd:
    def __init__(self, root: Path, name: str = "sshd") -> None:
        self.root = root / name
        self.root.mkdir(parents=True)
        self.port = free_port()
        self.host_key = self.root / "host_key"
        self.client_key = self.root / "client_key"
        self.known_hosts = self.root / "known_hosts"
        self.workdir = self.root / "work"
        host_public = keygen(self.host_key)
        (self.root / "authorized_keys").write_text(keygen(self.client_key) + "\n")
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_public}\n")
        self.config = self.root / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"PidFile {self.root / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}", "StrictModes no",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
            "PermitRootLogin yes", "SetEnv SHLVL=1", "MaxSessions 100", "MaxStartups 100",
            "LogLevel ERROR", "Subsystem sftp internal-sftp", "",
        ]))
        self.proc: subprocess.Popen[bytes] | None = None

    def host(self, name: str, **extra: object) -> dict[str, object]:
        """A [[hosts]] table that reaches this server."""
        return {"name": name, "address": "127.0.0.1", "port": self.port,
                "user": os.environ.get("USER") or "root", "key_file": str(self.client_key),
                "known_hosts": str(self.known_hosts), "workdir": str(self.workdir), **extra}

    def start(self) -> Sshd:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
        with (self.root / "sshd.log").open("ab") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"sshd on {self.port} did not answer: {(self.root / 'sshd.log').read_text()}")

    def sessions(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def cut(self) -> None:
        """Drop every connection, leaving detached jobs running."""
        for pid in self.sessions():
            _kill(pid)

    def stop(self) -> None:
        """The host dies: its sshd, its sessions and everything running in its workdir."""
        self.cut()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid in processes_under(self.workdir):
            _kill(pid)


def processes_under(directory: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.readlink(proc / "cwd").startswith(str(directory)):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def pause(sshd: Sshd) -> None:
    """The host drops off the network for a while: sshd and its sessions go, the jobs
    running there go on."""
    sshd.cut()
    if sshd.proc is not None and sshd.proc.poll() is None:
        sshd.proc.kill()
        sshd.proc.wait(10)
