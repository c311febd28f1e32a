"""A commit built on a local host, end to end through the real server and API."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from asyncci.config import load_config
from asyncci.hosts.base import JobRun
from asyncci.hosts.wrapper import Wrapper
from asyncci.server import make_host
from tests.support.config import make_config
from tests.support.gitrepo import GitRepo
from tests.support.server import api_for, running_server
from tests.support.wait import until

ENV_SCRIPT = "env | sort; echo secret is $MY_SECRET"


def processes_with(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line]


async def test_commit_passes_with_the_spec_environment(
    config_for: Callable[..., Path], repo: GitRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "server-side-only-token")
    monkeypatch.setenv("DEMO_SECRET", "hunter2-the-secret")
    config = config_for(ENV_SCRIPT, env={"FROM_REPO": "yes"},
                        secrets={"MY_SECRET": {"env": "DEMO_SECRET"}})
    async with running_server(config) as server, api_for(server) as api:
        status, build = await api.call("POST", "/api/repos/demo/builds", {"ref": "main"})
        assert status == 201, build
        assert (build["sha"], build["ref"], build["branch"]) == (repo.head(), "refs/heads/main", "main")
        done = await api.build(build["id"])
        assert done["state"] == "passed", done
        job = done["jobs"][0]
        assert (job["exit_code"], job["attempt"], job["host"]) == (0, 1, "local")
        log = (await api.call("GET", f"/api/jobs/{job['id']}/log"))[1].decode()
    env = dict(line.split("=", 1) for line in log.splitlines() if "=" in line and not line.startswith("["))
    assert env["CI"] == env["ASYNCCI"] == "true"
    assert env["ASYNCCI_BUILD_ID"] == str(build["id"])
    assert env["ASYNCCI_JOB_ID"] == str(job["id"])
    assert env["ASYNCCI_REPO"] == "demo" and env["ASYNCCI_SHA"] == repo.head()
    assert env["ASYNCCI_REF"] == "refs/heads/main" and env["ASYNCCI_BRANCH"] == "main"
    assert env["ASYNCCI_PR"] == "" and env["ASYNCCI_EVENT"] == "manual"
    assert env["ASYNCCI_HOST"] == "local" and env["ASYNCCI_SLOT"] in ("0", "1")
    assert env["ASYNCCI_ATTEMPT"] == "1" and env["TERM"] == "dumb" and env["FROM_REPO"] == "yes"
    assert "GITHUB_TOKEN" not in env and "ASYNCCI_TEST_TOKEN" not in env
    assert "hunter2-the-secret" not in log and "secret is ***" in log
    assert Path(env["PWD"]).name == env["ASYNCCI_SLOT"]


async def test_failing_script_fails_with_its_exit_code(config_for: Callable[..., Path]) -> None:
    async with running_server(config_for("echo about to fail; exit 7")) as server, \
            api_for(server) as api:
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        done = await api.build(build["id"])
    job = done["jobs"][0]
    assert (done["state"], job["state"], job["exit_code"]) == ("failed", "failed", 7)
    assert job["attempt"] == 1  # a failure is never retried
    assert job["shell"] and "exec bash" in job["shell"]


async def test_timeout_kills_the_whole_process_group(
    config_for: Callable[..., Path], tmp_path: Path
) -> None:
    marker = f"asyncci-timeout-marker-{os.getpid()}"
    script = (f"bash -c 'sleep 300; : {marker}' &\n"
              f"bash -c 'trap \"\" TERM; sleep 301; : {marker}' &\nwait")
    async with running_server(config_for(script, timeout="1s"), kill_grace=0.5) as server, \
            api_for(server) as api:
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        await until(lambda: processes_with(marker), 10, "the job's processes")
        done = await api.build(build["id"], timeout=30)
    job = done["jobs"][0]
    assert (job["state"], job["reason"]) == ("failed", "timed out after 1s")
    assert processes_with(marker) == []  # even the one ignoring SIGTERM got SIGKILL


async def test_cancel_stops_a_running_job(config_for: Callable[..., Path]) -> None:
    marker = f"asyncci-cancel-marker-{os.getpid()}"
    async with running_server(config_for(f"echo started; bash -c 'sleep 300; : {marker}'")) as server, \
            api_for(server) as api:
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        await until(lambda: processes_with(marker), 10, "the job to run")
        status, answer = await api.call("POST", f"/api/builds/{build['id']}/cancel")
        assert status == 200, answer
        done = await api.build(build["id"], timeout=20)
        assert done["state"] == "cancelled"
        assert done["jobs"][0]["reason"] == "cancelled by a user"
        assert processes_with(marker) == []
        log = (await api.call("GET", f"/api/jobs/{done['jobs'][0]['id']}/log"))[1]
        assert b"started" in log



async def test_checkout_failure_is_retried_then_errored(
    config_for: Callable[..., Path], repo: GitRepo, tmp_path: Path
) -> None:
    async with running_server(config_for(retries=1)) as server, api_for(server) as api:
        await api.call("POST", "/api/hosts/local/drain")
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        repo.path.rename(tmp_path / "gone")  # the host can no longer fetch the commit
        await api.call("POST", "/api/hosts/local/resume")
        done = await api.build(build["id"])
    job = done["jobs"][0]
    assert (done["state"], job["attempt"]) == ("errored", 2), done
    assert job["reason"].startswith(f"checkout of {build['sha']} failed")
    assert [a["outcome"] for a in job["attempts"]] == ["requeued", "errored"]


async def test_a_line_that_may_begin_a_secret_is_shown_once_the_job_goes_quiet(
    config_for: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The masker holds back an end that may begin a secret ("hun…") until more output
    comes; a job that goes quiet after it still shows it live, and masks a secret that
    does come."""
    monkeypatch.setenv("DEMO_SECRET", "hunter2-the-secret")
    script = 'echo "Downloading hun"; sleep 30'
    config = config_for(script, secrets={"MY_SECRET": {"env": "DEMO_SECRET"}})
    async with running_server(config) as server, api_for(server) as api:
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        job_id = build["jobs"][0]["id"]

        async def shown() -> bool:
            return b"Downloading hun\n" in (await api.call("GET", f"/api/jobs/{job_id}/log"))[1]

        await until(shown, 10, "the held line shown while the job sleeps")
        await api.call("POST", f"/api/builds/{build['id']}/cancel")
        assert (await api.build(build["id"]))["state"] == "cancelled"


async def test_a_host_forgets_attempts_long_over_once_it_is_reached(
    config_for: Callable[..., Path], tmp_path: Path
) -> None:
    """An attempt's directory outlives it only so the server can finish reading its log:
    a day after it ended, the host's next connection (its probe) removes it; `asyncci
    check` probes too, and removes nothing."""
    jobs = tmp_path / "work" / "jobs"
    day_ago = time.time() - 86400 - 120
    for name, ended in (("1-1", day_ago), ("2-1", time.time()), ("3-1", None)):
        (jobs / name).mkdir(parents=True)
        (jobs / name / "job.log").write_text("x")
        if ended is not None:
            (jobs / name / "job.exit").write_text("0\n")
            os.utime(jobs / name / "job.exit", (ended, ended))
    host = make_host(load_config(config_for()).hosts[0])
    await host.probe()
    assert sorted(p.name for p in jobs.iterdir()) == ["1-1", "2-1", "3-1"]
    await host.maintain()
    assert sorted(p.name for p in jobs.iterdir()) == ["2-1", "3-1"]  # one still running


async def test_a_slots_workspace_is_as_fresh_as_a_new_checkout_whatever_a_job_left(
    config_for: Callable[..., Path], repo: GitRepo, tmp_path: Path
) -> None:
    """Each job of a slot sees its commit and nothing else, whatever the last one left; a
    workspace that provably is so already is not checked out again (its index is the
    very file the last checkout wrote)."""
    repo.commit("ignore logs", {".gitignore": "*.log\n"})
    rounds, mark = tmp_path / "round", tmp_path / "fsmonitor-ran"
    rounds.write_text("0")
    leave = {2: "mkdir -p empty/inner", 3: "echo x >junk.log", 4: "echo untracked >junk",
             5: "echo changed >file.txt", 6: "echo staged >file.txt; git add file.txt",
             7: "chmod +x file.txt", 8: f"git config core.fsmonitor 'touch {mark}'",
             9: "git commit -qm local --allow-empty"}
    script = (f'n=$(cat {rounds}); echo $((n + 1)) >{rounds}\n'
              # Git in the job takes no optional locks: a refreshed index is a new file.
              'echo "round $n: $(ls -A | tr "\\n" " ")| $(GIT_OPTIONAL_LOCKS=0 git status'
              ' --porcelain --ignored -uall | tr "\\n" " ")| $(cat file.txt) |'
              ' $(git rev-parse HEAD) | $(stat -c %i .git/index)"\n'
              + "".join(f'if [ "$n" = {n} ]; then {what}; fi\n' for n, what in leave.items()))
    host = {"name": "local", "type": "local", "slots": 1, "workdir": str(tmp_path / "work")}
    seen = []
    async with running_server(config_for(script, hosts=[host])) as server, api_for(server) as api:
        for _ in range(len(leave) + 2):
            build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
            done = await api.build(build["id"])
            assert done["state"] == "passed", done
            log = (await api.call("GET", f"/api/jobs/{done['jobs'][0]['id']}/log"))[1].decode()
            seen.append(log.split(": ", 1)[1].rsplit(" | ", 1))
    fresh = f".git .gitignore file.txt | | first commit | {repo.head()}"
    assert [state for state, _ in seen] == [fresh] * len(seen)
    inodes = [inode for _, inode in seen]
    assert inodes[0] == inodes[1] == inodes[2]  # rounds 0 and 1 left nothing: no checkout
    assert inodes[3] != inodes[2] and not mark.exists()


def test_a_nul_never_reaches_the_wrapper(tmp_path: Path) -> None:
    """bash's `read` drops it and waits for one byte more: the job would never start. A
    secret read from a file may hold one; the config and pipeline files refuse it."""
    host = load_config(make_config(tmp_path, [{"name": "demo", "url": "u", "script": "x"}])
                       ).hosts[0]
    run = JobRun(1, 1, "demo", "u", "a" * 40, "refs/heads/main", 0, "make", {"S": "a\0b"})
    with pytest.raises(ValueError, match="NUL"):
        Wrapper(host, str(tmp_path), 1.0).input("start", run)


async def test_a_jobs_variables_each_may_be_long(config_for: Callable[..., Path]) -> None:
    """Each is an environment string of its own: together they pass the 128 KiB one
    string may hold (a few certificates would)."""
    big = {f"CERT_{i}": str(i) * 60_000 for i in range(3)}
    script = 'echo "lengths ${#CERT_0} ${#CERT_1} ${#CERT_2}"'
    async with running_server(config_for(script, env=big)) as server, api_for(server) as api:
        build = await api.build((await api.call("POST", "/api/repos/demo/builds", {}))[1]["id"])
        log = (await api.call("GET", f"/api/jobs/{build['jobs'][0]['id']}/log"))[1].decode()
    assert build["state"] == "passed" and "lengths 60000 60000 60000" in log, log
