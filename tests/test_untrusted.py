"""Untrusted builds (SPEC §5a), tried as an attacker with a fork's pull request would: the
fork's job runs confined (real bubblewrap) and cannot take a trusted job's secrets, change
what a later job checks out, outlive its job, or reach the server's own credentials."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from asyncci.server import Server
from tests.support.config import make_config
from tests.support.github import FakeGitHub, fake_github, payload, signed
from tests.support.gitrepo import GitRepo
from tests.support.server import Api, api_for, running_server
from tests.support.sshd import Sshd
from tests.support.wait import until
from tests.test_local_jobs import processes_with
from tests.test_pages import browser, login

WEBHOOK = "webhook-secret-for-untrusted"
SECRET = "trusted-secret-value!"
SERVER_TOKEN = "gh-token-the-server-holds"
FILE_SECRET = "secret-read-from-a-file"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def server_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"ASYNCCI_WEBHOOK_SECRET": WEBHOOK, "GITHUB_TOKEN": SERVER_TOKEN,
                       "DEMO_SECRET": SECRET}.items():
        monkeypatch.setenv(key, value)


def fork_commit(repo: GitRepo, number: int, script: str, keys: str = "") -> str:
    """A fork's head: its own pipeline file (TOML `keys` added to its job), with the
    attacker's script."""
    sha = repo.commit("a helpful change", {
        ".asyncci.toml": f"[[jobs]]\nname = \"test\"\nscript = '''\n{script}\n'''\n{keys}\n"})
    repo.git("update-ref", f"refs/pull/{number}/head", sha)
    repo.git("reset", "-q", "--hard", "HEAD~1")  # main stays where it was
    return sha


@asynccontextmanager
async def serving(tmp_path: Path, repo: GitRepo, script: str, hosts: list[dict[str, Any]],
                  **keys: Any) -> AsyncIterator[tuple[Server, Api, FakeGitHub]]:
    (tmp_path / "secret.txt").write_text(FILE_SECRET)
    async with fake_github() as github:
        config = make_config(
            tmp_path,
            [{"name": "demo", "url": str(repo.path), "github": "octo/demo",
              "pull_requests": True, "script": script,
              "secrets": {"DEMO_SECRET": {"env": "DEMO_SECRET"},
                          "FILE_SECRET": {"file": str(tmp_path / "secret.txt")}}, **keys}],
            hosts=hosts, github={"api_url": github.url})
        async with running_server(config) as server, api_for(server) as api:
            yield server, api, github


def local(tmp_path: Path, slots: int = 2, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": "local", "type": "local", "slots": slots, "workdir": str(tmp_path / "work"),
             **extra}]


async def open_pr(api: Api, number: int, sha: str, head: str = "stranger/demo",
                  association: str = "CONTRIBUTOR", action: str = "opened") -> dict[str, Any]:
    body = payload("pull_request", action=action, number=str(number), sha=sha,
                   repository="octo/demo", head_repository=head, association=association)
    async with aiohttp.ClientSession() as http:
        async with http.post(api.url + "/hooks/github", data=io.BytesIO(body),
                             headers=signed(body, WEBHOOK, "pull_request", f"d-{sha}")) as r:
            assert r.status == 202, await r.text()

    async def made() -> Any:
        found = (await api.get(f"/api/builds?ref=refs/pull/{number}/head"))["builds"]
        return next((b for b in found if b["sha"] == sha), None)
    return dict(await until(made, 15, f"the build of pull request {number}"))


async def log_of(api: Api, build: dict[str, Any]) -> str:
    return str((await api.call("GET", f"/api/jobs/{build['jobs'][0]['id']}/log"))[1].decode())


async def manual(api: Api, **body: str) -> dict[str, Any]:
    status, build = await api.call("POST", "/api/repos/demo/builds", body)
    assert status == 201, build
    return dict(build)


def plant(where: str, mark: Path) -> str:
    """Shell that plants a hook, a smudge filter and attributes in the workspaces `where`
    names, each of which would mark `mark` and change file.txt if git ever ran them."""
    return f"""
for ws in {where}; do
  mkdir -p "$ws/.git/hooks" "$ws/.git/info" 2>/dev/null || continue
  printf '#!/bin/sh\\necho hook >>{mark}; cat */env >>{mark} 2>/dev/null; echo PWNED >>file.txt\\n' >"$ws/.git/hooks/post-checkout"
  chmod +x "$ws/.git/hooks/post-checkout"
  git -C "$ws" config filter.evil.smudge "sh -c 'echo filter >>{mark}; echo PWNED; cat'" || true
  echo '* filter=evil' >"$ws/.git/info/attributes"
done
echo planted"""


@pytest.mark.parametrize("kind", ["local", "ssh"])
async def test_a_fork_plants_nothing_reads_nothing_and_leaves_nothing(
    tmp_path: Path, repo: GitRepo, kind: str
) -> None:
    """Attacks 1-5 of the issue, on a local and on an SSH host: hooks and filters planted
    in every workspace the fork can name, a concurrent trusted job's environment, a
    daemon that outlives its job, the server's own environment and files, raw logs."""
    mark, marker = tmp_path / "hook-ran", f"asyncci-daemon-{os.getpid()}-{kind}"
    if kind == "ssh":
        sshd = Sshd(tmp_path, "host").start()
        hosts, work = [sshd.host("remote", slots=2)], sshd.workdir
    else:
        hosts, work = local(tmp_path), tmp_path / "work"
    config = tmp_path / "asyncci.toml"
    trusted = ('echo "content=[$(cat file.txt)] secret=$DEMO_SECRET"\nsleep 3\n'
               + plant('"$PWD"', mark))
    steal = f"""set +e
{plant(f'"$PWD" {work}/ws/*/* {work}/ws/*', mark)}
setsid sh -c 'while :; do sleep 1; done; : {marker}' >/dev/null 2>&1 &
nohup sh -c 'sleep 300; : {marker}' >/dev/null 2>&1 &
echo "processes: $(ls /proc | grep -c '^[0-9]')"
for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' <"$f"; done 2>/dev/null
p=$PPID; while [ "$p" -gt 1 ] 2>/dev/null; do tr '\\0' '\\n' </proc/$p/environ; p=$(cut -d' ' -f4 /proc/$p/stat); done 2>/dev/null
cat {config} {tmp_path}/secret.txt {tmp_path}/data/asyncci.db {work}/jobs/*/job.log {work}/jobs/*/env 2>/dev/null | tr -cd '[:print:]\\n'
echo "home: $(ls -A "$HOME" | wc -l)"
echo done"""
    try:
        async with serving(tmp_path, repo, trusted, hosts) as (_, api, _):
            first = await api.build((await manual(api, ref="main"))["id"])
            assert not first["untrusted"] and "secret=***" in await log_of(api, first)
            sha = fork_commit(repo, 7, steal)
            # A trusted job with its secret runs while the fork's does.
            with_secret = await api.build((await manual(api, ref="main"))["id"], "running")
            fork = await open_pr(api, 7, sha)
            assert fork["untrusted"] and fork["jobs"][0]["confined"] == "sandbox"
            fork = await api.build(fork["id"], timeout=60)
            stolen = await log_of(api, fork)
            assert fork["state"] == "passed", stolen
            assert "planted" in stolen and "done" in stolen
            for leaked in (SECRET, FILE_SECRET, SERVER_TOKEN, WEBHOOK, "ASYNCCI_TEST_TOKEN",
                           "[[repos]]"):
                assert leaked not in stolen, leaked
            assert int(stolen.split("processes: ")[1].split()[0]) < 10  # its own only
            assert "home: 0" in stolen
            assert processes_with(marker) == []  # nothing of the fork's job outlived it
            await api.build(with_secret["id"])
            again = await api.build((await manual(api, ref="main"))["id"])
            text = await log_of(api, again)
            assert again["state"] == "passed" and "content=[first commit]" in text, text
            assert "PWNED" not in text and not mark.exists()
            # The host keeps no unmasked copy of a log the server has (emptied: no process).
            assert [p for p in work.glob("jobs/*/job.log") if p.stat().st_size] == []
            assert list(work.glob("ws/untrusted/*")) == []  # the fork's workspace is gone
    finally:
        if kind == "ssh":
            sshd.stop()


@pytest.mark.parametrize("fork", [True, False])
async def test_a_jobs_variables_never_change_what_runs_it(
    tmp_path: Path, repo: GitRepo, fork: bool
) -> None:
    """A pipeline names its variables as it likes, as the wrapper's own names too
    (`jail`, `script`) or a `PATH` that looks in the workspace first: none of them reaches
    the program that confines the job or changes what runs, for a fork's confined job
    and a trusted unconfined one alike."""
    mark = Path(f"/var/tmp/asyncci-escape-{os.getpid()}-{fork}")
    escape = repo.path / "escape"
    escape.write_text(f"#!/bin/sh\ntouch {mark}\n")
    escape.chmod(0o755)
    (repo.path / "bash").write_text(f"touch {mark}\n")
    keys = 'env = { jail = "./escape", script = "bash", names = "n", PATH = ".:/usr/bin:/bin" }'
    shown = 'echo "jail=$jail script=$script names=$names path=$PATH"'
    try:
        async with serving(tmp_path, repo, shown, local(tmp_path)) as (_, api, _):
            if fork:
                sha = fork_commit(repo, 9, shown, keys)
                build = await api.build((await open_pr(api, 9, sha))["id"], timeout=60)
            else:
                repo.commit("variables", {".asyncci.toml": (
                    f'[[jobs]]\nname = "test"\nscript = \'{shown}\'\n{keys}\n')})
                build = await api.build((await manual(api, ref="main"))["id"])
            text = await log_of(api, build)
        assert build["state"] == "passed", text
        assert build["untrusted"] is fork
        assert "jail=./escape script=bash names=n path=.:/usr/bin:/bin" in text, text
        assert not mark.exists()
    finally:
        mark.unlink(missing_ok=True)


async def test_a_trusted_job_never_reads_the_servers_environment(
    tmp_path: Path, repo: GitRepo
) -> None:
    """Attack 4 for an unconfined job: the processes above it start from a minimal
    environment, not the server's."""
    walk = ("p=$PPID; while [ \"$p\" -gt 1 ] 2>/dev/null; do tr '\\0' '\\n' </proc/$p/environ;"
            " p=$(cut -d' ' -f4 /proc/$p/stat); done")
    async with serving(tmp_path, repo, walk, local(tmp_path)) as (_, api, _):
        build = await api.build((await manual(api, ref="main"))["id"])
        text = await log_of(api, build)
    assert build["state"] == "passed" and "PATH=" in text, text
    for leaked in (SERVER_TOKEN, WEBHOOK, "ASYNCCI_TEST_TOKEN", "DEMO_SECRET="):
        assert leaked not in text, leaked


async def test_a_sandbox_writes_only_its_workspace_and_keeps_git_log(
    tmp_path: Path, repo: GitRepo
) -> None:
    """Nor reads what the build user keeps in /var/tmp or /run: sockets there (a session
    bus, a container engine's) would start processes outside it."""
    outside = Path(f"/opt/asyncci-outside-{os.getpid()}")
    home = Path.home() / f".asyncci-pwned-{os.getpid()}"
    kept = Path(f"/var/tmp/asyncci-kept-{os.getpid()}")
    kept.write_text("kept-by-the-host")
    script = f"""
touch {outside} 2>/dev/null && echo wrote-outside
touch {home} 2>/dev/null
cat {kept} /run/*/* 2>/dev/null || echo nothing-kept
touch /tmp/own-tmp /var/tmp/own-var-tmp && echo own-tmp
echo ws > in-workspace && echo wrote-workspace
git log -1 --format='log: %s'
git describe --always >/dev/null && echo described"""
    try:
        async with serving(tmp_path, repo, script, local(tmp_path), isolation="all") \
                as (_, api, _):
            build = await api.build((await manual(api, ref="main"))["id"])
            text = await log_of(api, build)
    finally:
        kept.unlink()
    assert build["jobs"][0]["confined"] == "sandbox" and not build["untrusted"]
    assert build["state"] == "passed", text
    assert "wrote-outside" not in text and not outside.exists() and not home.exists()
    assert "kept-by-the-host" not in text and "nothing-kept" in text
    assert "own-tmp" in text and not Path("/tmp/own-tmp").exists()
    assert not Path("/var/tmp/own-var-tmp").exists()
    assert "wrote-workspace" in text and "log: first commit" in text and "described" in text


async def test_a_forks_pipeline_chooses_neither_its_host_nor_its_timeout(
    tmp_path: Path, repo: GitRepo
) -> None:
    """Attack 6: `labels = ["deploy"]` finds only a host that never takes untrusted
    builds; `timeout = "0"` gets the repo's timeout."""
    hosts = local(tmp_path) + [{"name": "deploy", "type": "local", "slots": 1,
                                "labels": ["deploy"], "untrusted": False,
                                "workdir": str(tmp_path / "deploy")}]
    async with serving(tmp_path, repo, "echo ok", hosts, timeout="2s") as (_, api, _):
        deploy = await open_pr(api, 8, fork_commit(repo, 8, "echo deployed", 'labels = ["deploy"]'))
        endless = await open_pr(api, 9, fork_commit(repo, 9, "sleep 60", 'timeout = "0"'))
        done = await api.build(endless["id"], timeout=30)
        assert done["jobs"][0]["reason"] == "timed out after 2s"

        async def reason() -> Any:
            jobs = (await api.get("/api/queue"))["jobs"]
            return next((j["reason"] for j in jobs if j["build_id"] == deploy["id"]), None)
        assert await until(reason, 5) == "no online host takes untrusted builds"
        assert (await api.get(f"/api/builds/{deploy['id']}"))["state"] == "queued"


async def test_a_manual_build_of_code_no_branch_holds_is_untrusted(
    tmp_path: Path, repo: GitRepo
) -> None:
    """Attack 7: a person asking for a pull request's head, or a sha on no branch the repo
    builds, gets an untrusted build: confined, no secrets."""
    sha = repo.commit("not on main")
    repo.git("update-ref", "refs/pull/7/head", sha)
    repo.branch("wip", sha)  # a branch the repo does not build holds it too
    repo.git("reset", "-q", "--hard", "HEAD~1")
    script = 'echo "secret=[$DEMO_SECRET]"'
    async with serving(tmp_path, repo, script, local(tmp_path), branches=["main"]) as (_, api, _):
        for body in ({"ref": "refs/pull/7/head"}, {"sha": sha}, {"ref": "wip"}):
            build = await api.build((await manual(api, **body))["id"])
            assert build["untrusted"] and build["jobs"][0]["confined"] == "sandbox", body
            assert "secret=[]" in await log_of(api, build)
            status, rebuilt = await api.call("POST", f"/api/builds/{build['id']}/rebuild")
            assert status == 201 and rebuilt["untrusted"]
        trusted = await api.build((await manual(api, ref="main"))["id"])
        assert not trusted["untrusted"] and trusted["jobs"][0]["confined"] is None
        assert "secret=[***]" in await log_of(api, trusted)
        head = await api.build((await manual(api, sha=repo.head("main")))["id"])
        assert not head["untrusted"]


async def test_a_host_without_bwrap_never_takes_an_untrusted_job(
    tmp_path: Path, repo: GitRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        for tool in Path(directory).iterdir():
            if tool.name != "bwrap" and not (bin_dir / tool.name).exists():
                (bin_dir / tool.name).symlink_to(tool)
    monkeypatch.setenv("PATH", str(bin_dir))
    async with serving(tmp_path, repo, "echo ok", local(tmp_path)) as (server, api, _):
        async def probed() -> Any:
            [host] = (await api.get("/api/hosts"))["hosts"]
            return "sandbox:" in host["confines"] and host
        assert "sandbox: no (needs bwrap)" in (await until(probed, 10))["confines"]
        fork = await open_pr(api, 7, fork_commit(repo, 7, "echo ran"))

        async def reason() -> Any:
            jobs = (await api.get("/api/queue"))["jobs"]
            return next((j["reason"] for j in jobs if j["build_id"] == fork["id"]), None)
        assert await until(reason, 5) == "no online host can confine it (needs bwrap)"
        trusted = await api.build((await manual(api, ref="main"))["id"])
        assert trusted["state"] == "passed"  # the host works for what needs no sandbox
        assert (await api.get(f"/api/builds/{fork['id']}"))["state"] == "queued"


async def test_fork_pull_requests_wait_for_approval(tmp_path: Path, repo: GitRepo) -> None:
    async with serving(tmp_path, repo, "echo ok", local(tmp_path),
                       fork_pull_requests="approve") as (_, api, github):
        waiting = await open_pr(api, 7, fork_commit(repo, 7, "echo approved-run"))
        assert waiting["approval"] == "waiting"

        async def reason(build: dict[str, Any]) -> Any:
            jobs = (await api.get("/api/queue"))["jobs"]
            return next((j["reason"] for j in jobs if j["build_id"] == build["id"]), None)
        assert await until(lambda: reason(waiting), 5) == "waiting for approval"
        await until(lambda: any("waiting for approval" in s.get("description", "")
                                for s in github.statuses), 10, "a pending status saying so")
        status, answer = await api.call("POST", f"/api/builds/{waiting['id']}/approve")
        assert status == 200 and answer["approval"] == "approved", answer
        assert (await api.build(waiting["id"]))["state"] == "passed"
        # A new head needs a new approval, given this time on the build page.
        head = fork_commit(repo, 7, "echo second-head")
        again = await open_pr(api, 7, head, action="synchronize")
        assert again["approval"] == "waiting" and await until(lambda: reason(again), 5)
        async with browser(api) as http:
            csrf = await login(http)
            async with http.get(f"/builds/{again['id']}") as r:
                assert "/approve" in await r.text()
            async with http.post(f"/builds/{again['id']}/approve", data={"csrf": csrf},
                                 allow_redirects=False) as r:
                assert r.status == 303
        assert (await api.build(again["id"]))["state"] == "passed"
        # A member of the repo needs none; a build that never waited cannot be approved.
        member = await open_pr(api, 8, fork_commit(repo, 8, "echo member"), association="MEMBER")
        assert member["approval"] is None
        assert (await api.build(member["id"]))["state"] == "passed"
        status, _ = await api.call("POST", f"/api/builds/{member['id']}/approve")
        assert status == 409
        status, _ = await api.call("POST", "/api/builds/999999/approve")
        assert status == 404


async def test_ignored_fork_pull_requests_make_no_build(tmp_path: Path, repo: GitRepo) -> None:
    async with serving(tmp_path, repo, "echo ok", local(tmp_path),
                       fork_pull_requests="ignore") as (_, api, _):
        own = await open_pr(api, 9, fork_commit(repo, 9, "echo own"), head="octo/demo")
        assert not own["untrusted"]
        sha = fork_commit(repo, 7, "echo fork")
        body = payload("pull_request", action="opened", number="7", sha=sha,
                       repository="octo/demo", head_repository="stranger/demo",
                       association="NONE")
        async with aiohttp.ClientSession() as http:
            async with http.post(api.url + "/hooks/github", data=io.BytesIO(body),
                                 headers=signed(body, WEBHOOK, "pull_request", "d-x")) as r:
                assert r.status == 202
        await api.build(own["id"])
        builds = (await api.get("/api/builds"))["builds"]
        assert [b["sha"] for b in builds if b["pr"] == 7] == []
