"""Real git repositories for tests, with a pinned author and date so shas are stable."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ENV = {
    "GIT_AUTHOR_NAME": "Ada Tester",
    "GIT_AUTHOR_EMAIL": "ada@example.org",
    "GIT_COMMITTER_NAME": "Ada Tester",
    "GIT_COMMITTER_EMAIL": "ada@example.org",
    "GIT_AUTHOR_DATE": "2026-11-23T10:00:00Z",
    "GIT_COMMITTER_DATE": "2026-11-23T10:00:00Z",
}


class GitRepo:
    def __init__(self, path: Path, branch: str = "main") -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", branch)

    def git(self, *args: str) -> str:
        out = subprocess.run(
            ["git", *args], cwd=self.path, check=True, capture_output=True, text=True,
            env={**os.environ, **ENV}, timeout=30,
        )
        return out.stdout.strip()

    def commit(self, message: str = "a change", files: dict[str, str] | None = None) -> str:
        for name, text in (files or {"file.txt": message}).items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.head()

    def head(self, ref: str = "HEAD") -> str:
        return self.git("rev-parse", ref)

    def branch(self, name: str, start: str = "HEAD") -> None:
        self.git("branch", "-f", "--", name, start)

    def checkout(self, name: str) -> None:
        self.git("checkout", "-q", name)
