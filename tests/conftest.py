"""Shared fixtures: a real git repo and a config that builds it on a local host."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import make_config
from tests.support.gitrepo import GitRepo
from tests.support.sshd import Sshd


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    git = GitRepo(tmp_path / "upstream")
    git.commit("first commit")
    return git


@pytest.fixture
def config_for(tmp_path: Path, repo: GitRepo) -> Callable[..., Path]:
    """make_config for `repo` (named "demo"), with a local host of 2 slots by default."""

    def make(script: str = "echo ok", hosts: list[dict[str, Any]] | None = None,
             **repo_keys: Any) -> Path:
        hosts = hosts if hosts is not None else [
            {"name": "local", "type": "local", "slots": 2, "workdir": str(tmp_path / "work")}]
        return make_config(
            tmp_path, [{"name": "demo", "url": str(repo.path), "script": script, **repo_keys}],
            hosts=hosts,
        )

    return make


@pytest.fixture
def sshd_pair(tmp_path: Path) -> Iterator[tuple[Sshd, Sshd]]:
    """Two real OpenSSH servers on 127.0.0.1, each a build host with its own workdir."""
    servers = (Sshd(tmp_path, "host-a").start(), Sshd(tmp_path, "host-b").start())
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny image made offline in the test run (podman import), or a skip without podman."""
    from tests.support.image import available, build_image

    if not available():
        pytest.skip("podman, runc, bash-static and busybox-static are needed")
    return build_image(tmp_path_factory.mktemp("image"))
