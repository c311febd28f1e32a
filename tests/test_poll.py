"""Polling real repos: branch globs, dedup, superseding, hostile names, poll errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from asyncci.mirror import GitError
from tests.support.gitrepo import GitRepo
from tests.support.server import api_for, running_server
from tests.support.wait import until


async def test_poll_builds_new_heads_once_and_follows_globs(
    config_for: Callable[..., Path], repo: GitRepo
) -> None:
    repo.branch("feature/a")
    repo.branch("feature/b/deep")
    config = config_for(branches=["main", "feature/*"])
    async with running_server(config) as server, api_for(server) as api:
        poller = server.pollers["demo"]
        await poller.poll()
        await poller.poll()  # nothing changed: nothing new
        builds = (await api.get("/api/builds"))["builds"]
        assert sorted(b["ref"] for b in builds) == ["refs/heads/feature/a", "refs/heads/main"]
        assert {b["event"] for b in builds} == {"poll"}
        first = repo.head()
        second = repo.commit("second commit")
        await poller.poll()
        builds = (await api.get("/api/builds?ref=main"))["builds"]
        assert [b["sha"] for b in builds] == [second, first]
        assert builds[0]["message"] == "second commit"
        assert builds[0]["author"] == "Ada Tester <ada@example.org>"
        assert (await api.get("/api/repos/demo"))["poll_error"] is None


async def test_newer_commit_supersedes_except_on_kept_branches(
    config_for: Callable[..., Path], repo: GitRepo
) -> None:
    repo.branch("topic")
    config = config_for("sleep 300", branches=["main", "topic"], keep_superseded=["main"])
    async with running_server(config) as server, api_for(server) as api:
        await server.pollers["demo"].poll()
        old = {b["branch"]: b for b in (await api.get("/api/builds"))["builds"]}
        await until(lambda: all_running(api, [b["id"] for b in old.values()]), 20, "2 running")
        repo.commit("new on main")
        repo.checkout("topic")
        repo.commit("new on topic")
        await server.pollers["demo"].poll()
        superseded = await api.build(old["topic"]["id"], "cancelled", timeout=20)
        assert superseded["jobs"][0]["reason"].startswith("superseded")
        kept = await api.get(f"/api/builds/{old['main']['id']}")
        assert kept["state"] == "running"
        for build in (await api.get("/api/builds"))["builds"]:
            await api.call("POST", f"/api/builds/{build['id']}/cancel")


async def all_running(api: object, ids: list[int]) -> bool:
    states = [(await api.get(f"/api/builds/{i}"))["state"] for i in ids]  # type: ignore[attr-defined]
    return all(s == "running" for s in states)


async def test_hostile_branch_names_and_messages_stay_data(
    config_for: Callable[..., Path], repo: GitRepo, tmp_path: Path
) -> None:
    evil = "x$(touch${IFS}PWNED)`touch${IFS}PWNED2`;touch${IFS}PWNED3"
    repo.checkout("main")
    repo.git("checkout", "-q", "-b", evil)
    message = "<script>alert(1)</script> $(touch PWNED4) 'quoted' \"double\""
    sha = repo.commit(message)
    config = config_for('echo "branch=$ASYNCCI_BRANCH"', branches=["**"])
    async with running_server(config) as server, api_for(server) as api:
        await server.pollers["demo"].poll()
        status, answer = await api.call("GET", "/api/builds", params={"ref": f"refs/heads/{evil}"})
        builds = answer["builds"]
        assert len(builds) == 1 and builds[0]["sha"] == sha
        assert builds[0]["message"] == message
        done = await api.build(builds[0]["id"])
        assert done["state"] == "passed", done
        log = (await api.call("GET", f"/api/jobs/{done['jobs'][0]['id']}/log"))[1].decode()
    assert f"branch={evil}" in log
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))


async def test_poll_error_is_kept_on_the_repo(config_for: Callable[..., Path], tmp_path: Path) -> None:
    config = config_for(url=str(tmp_path / "no-such-repo"))
    async with running_server(config) as server, api_for(server) as api:
        with pytest.raises(GitError):
            await server.pollers["demo"].poll()
        repo = await api.get("/api/repos/demo")
        assert repo["poll_error"] and "no-such-repo" in repo["poll_error"]
        assert (await api.get("/api/builds"))["builds"] == []
