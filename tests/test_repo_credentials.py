"""A repo URL holding a token: git gets it from its environment, never on a command line
(`ps` shows those to every user), and no error message quotes it."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from asyncci.config import load_config, redact_credentials
from asyncci.hosts.base import HostLost
from asyncci.mirror import GitError, Mirror
from asyncci.server import make_host
from tests.support.gitrepo import GitRepo
from tests.support.server import api_for, running_server

URL = "https://bot:sekrit@git.example/demo.git"


@pytest.fixture
def git_calls(tmp_path: Path, repo: GitRepo, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every `git` command line run from here on, one a line, in the returned file; URL
    leads to `repo` (git's own rewriting, from the home's config)."""
    home, bin_dir, calls = tmp_path / "home", tmp_path / "bin", tmp_path / "git-calls"
    home.mkdir()
    (home / ".gitconfig").write_text(f'[url "{repo.path}"]\n\tinsteadOf = {URL}\n')
    bin_dir.mkdir()
    (bin_dir / "git").write_text(
        f"#!/bin/sh\nprintf '%s\\n' \"$*\" >>'{calls}'\nexec '{shutil.which('git')}' \"$@\"\n")
    (bin_dir / "git").chmod(0o755)
    calls.touch()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return calls


def fetches_without_token(calls: Path) -> list[str]:
    """The fetches among `calls`, once none of `calls` holds the token."""
    lines = calls.read_text().splitlines()
    assert not [line for line in lines if "sekrit" in line]
    return [line for line in lines if "fetch" in line.split()]


async def test_the_mirror_fetches_with_the_url_in_gits_environment_only(
    tmp_path: Path, repo: GitRepo, git_calls: Path,
) -> None:
    mirror = Mirror(tmp_path / "mirror.git", URL)
    assert await mirror.ls_remote() == {"refs/heads/main": repo.head()}
    await mirror.ensure(repo.head(), "refs/heads/main")
    assert (await mirror.commit(repo.head())).message == "first commit"
    with pytest.raises(GitError) as missing:
        await mirror.ensure("0" * 40)
    assert str(missing.value) == f"commit {'0' * 40} not found in https://***@git.example/demo.git"
    await mirror.close()
    assert "sekrit" not in (tmp_path / "mirror.git" / "config").read_text()
    assert fetches_without_token(git_calls)


@pytest.mark.parametrize("url", ["git://bot:sekrit@127.0.0.1:1/x.git",  # git quotes this one
                                 "https://bot:sekrit@127.0.0.1:1/x.git"])
async def test_git_errors_do_not_quote_the_token(tmp_path: Path, url: str) -> None:
    mirror = Mirror(tmp_path / "mirror.git", url)
    for call in (mirror.ls_remote, mirror.fetch):
        with pytest.raises(GitError) as failed:
            await asyncio.wait_for(call(), 60)
        assert "sekrit" not in str(failed.value) and "127.0.0.1" in str(failed.value)


async def test_a_job_builds_from_a_url_with_a_token(
    config_for: Callable[..., Path], repo: GitRepo, git_calls: Path,
) -> None:
    async with running_server(config_for("env", url=URL)) as server, api_for(server) as api:
        build = (await api.call("POST", "/api/repos/demo/builds", {"ref": "main"}))[1]
        done = await api.build(build["id"])
        assert done["state"] == "passed", done
        log = (await api.call("GET", f"/api/jobs/{done['jobs'][0]['id']}/log"))[1].decode()
    assert done["sha"] == repo.head() and "sekrit" not in log and "GIT_CONFIG" not in log
    hosts = [f for f in fetches_without_token(git_calls) if f.startswith("-c core.hooksPath")]
    assert hosts  # job.sh's fetch into the host's mirror, as well as the server's


async def test_ls_remote_asks_the_repos_url_wherever_the_server_runs(
    tmp_path: Path, repo: GitRepo, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From inside a checkout whose `origin` is another repo (the README's first command
    serves from a clone), the mirror's remote is still the configured one."""
    other = GitRepo(tmp_path / "other")
    other.commit("not this one")
    checkout = GitRepo(tmp_path / "checkout")
    checkout.git("remote", "add", "origin", str(other.path))
    monkeypatch.chdir(checkout.path)
    mirror = Mirror(tmp_path / "mirror.git", str(repo.path))
    assert await mirror.ls_remote() == {"refs/heads/main": repo.head()}


@pytest.mark.parametrize("url, text, shown", [
    (URL, f"fatal: unable to access '{URL}/': 403", "unable to access 'https://***@git.example"),
    ("git://bot:sekrit@h/x.git", "fatal: unable to look up bot:sekrit@h (port 9418)",
     "unable to look up ***@h (port 9418)"),
    ("https://ghp_TOKEN@h/x.git", "fatal: https://ghp_TOKEN@h/x.git not found",
     "fatal: https://***@h/x.git not found"),
    # The user of an SSH URL is no secret, and "git" elsewhere in a message stays.
    ("ssh://git@github.com/o/r.git", "git: ssh://git@github.com: no", "git: ssh://git@github"),
])
def test_credentials_are_taken_out_of_what_git_says(url: str, text: str, shown: str) -> None:
    redacted = redact_credentials(text, url)
    assert shown in redacted and "sekrit" not in redacted and "TOKEN" not in redacted


async def test_a_host_with_a_git_too_old_for_the_url_route_is_refused(
    config_for: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    bin_dir = tmp_path / "old-git"
    bin_dir.mkdir()
    (bin_dir / "git").write_text("#!/bin/sh\necho 'git version 2.30.2'\n")
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with pytest.raises(HostLost, match="^git version 2.30.2 is too old: asyncci needs git"
                                      " 2.31 or newer$"):
        await make_host(load_config(config_for()).hosts[0]).probe()
