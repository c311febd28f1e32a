"""Build hosts over SSH with real OpenSSH servers: spreading, labels, faults, restarts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import free_port
from tests.support.server import Api, ServerProcess, api_for, running_server
from tests.support.sshd import Sshd, keygen, pause, processes_under
from tests.support.wait import until, until_sync

Pair = tuple[Sshd, Sshd]


async def online(api: Api, *names: str) -> None:
    async def check() -> bool:
        hosts = {h["name"]: h["state"] for h in (await api.get("/api/hosts"))["hosts"]}
        return all(hosts.get(n) == "online" for n in names)
    await until(check, 20, f"hosts {names} online")


async def host_state(api: Api, name: str) -> Any:
    return next(h for h in (await api.get("/api/hosts"))["hosts"] if h["name"] == name)


async def log_of(api: Api, job_id: int) -> str:
    return (await api.call("GET", f"/api/jobs/{job_id}/log"))[1].decode()


def marker_processes(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and not line.startswith("ps ")]


async def test_jobs_spread_over_hosts_within_their_slots(
    config_for: Callable[..., Path], sshd_pair: Pair, tmp_path: Path
) -> None:
    a, b = sshd_pair
    trace = tmp_path / "trace"
    script = (f'echo "$ASYNCCI_HOST $ASYNCCI_SLOT start $(date +%s.%N)" >> {trace}; sleep 0.4;'
              f' echo "$ASYNCCI_HOST $ASYNCCI_SLOT end $(date +%s.%N)" >> {trace}; echo "GPU=$GPU"')
    hosts = [a.host("a", slots=2, slot_env={"GPU": "gpu{slot}"}), b.host("b", slots=1)]
    async with running_server(config_for(script, hosts=hosts)) as server, api_for(server) as api:
        await online(api, "a", "b")
        builds = [(await api.call("POST", "/api/repos/demo/builds", {}))[1] for _ in range(9)]
        done = [await api.build(b["id"]) for b in builds]
        assert {d["state"] for d in done} == {"passed"}
        jobs = [d["jobs"][0] for d in done]
        logs = {j["id"]: await log_of(api, j["id"]) for j in jobs}
    assert {j["host"] for j in jobs} == {"a", "b"}
    for j in jobs:
        expected = f"GPU=gpu{j['slot']}" if j["host"] == "a" else "GPU="
        assert expected + "\n" in logs[j["id"]]
    events = sorted((float(t), host, kind) for host, _, kind, t in
                    (line.split() for line in trace.read_text().splitlines()))
    busy = {"a": 0, "b": 0}
    for _, host, kind in events:
        busy[host] += 1 if kind == "start" else -1
        assert busy[host] <= {"a": 2, "b": 1}[host]


async def test_labels_route_jobs(config_for: Callable[..., Path], sshd_pair: Pair) -> None:
    a, b = sshd_pair
    hosts = [a.host("a", slots=2), b.host("b", slots=2, labels=["gpu"])]
    config = config_for("true", hosts=hosts, labels=["gpu"])
    async with running_server(config) as server, api_for(server) as api:
        await online(api, "a", "b")
        builds = [(await api.call("POST", "/api/repos/demo/builds", {}))[1] for _ in range(4)]
        done = [await api.build(b["id"]) for b in builds]
    assert [d["jobs"][0]["host"] for d in done] == ["b"] * 4


async def test_a_wrong_host_key_is_refused(
    config_for: Callable[..., Path], sshd_pair: Pair, tmp_path: Path
) -> None:
    a, _ = sshd_pair
    impostor = keygen(tmp_path / "other_key")
    a.known_hosts.write_text(f"[127.0.0.1]:{a.port} {impostor}\n")
    config = config_for(hosts=[a.host("a")])
    async with running_server(config) as server, api_for(server) as api:
        host = await until(lambda: _offline(api, "a"), 20, "host a refused")
    assert "not trusted" in host["last_error"]
    check = subprocess.run([sys.executable, "-m", "asyncci.cli", "check", "-c", str(config)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 1
    assert f"a: FAILED: host key of 127.0.0.1:{a.port} not trusted: its key CHANGED" in check.stdout


def test_check_says_what_is_wrong_with_each_host(
    config_for: Callable[..., Path], sshd_pair: Pair, tmp_path: Path
) -> None:
    a, b = sshd_pair
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    stranger = tmp_path / "stranger"
    keygen(stranger)
    hosts = [a.host("unknown", known_hosts=str(empty)),
             a.host("refused", key_file=str(stranger)),
             b.host("closed", port=free_port()),
             b.host("fine")]
    config = config_for(hosts=hosts)
    check = subprocess.run([sys.executable, "-m", "asyncci.cli", "check", "-c", str(config)],
                           capture_output=True, text=True, timeout=60)
    lines = dict(line.split(": ", 1) for line in check.stdout.splitlines()[1:])
    assert check.returncode == 1
    assert lines["unknown"].startswith(f"FAILED: host key of 127.0.0.1:{a.port} not trusted: unknown host")
    assert lines["refused"].startswith("FAILED: authentication refused for user")
    assert lines["closed"].startswith("FAILED: connection refused by 127.0.0.1:")
    assert lines["fine"].startswith("ok; OpenSSH_")


async def _offline(api: Api, name: str) -> Any:
    host = await host_state(api, name)
    return host if host["state"] == "offline" and host["last_error"] else None


def test_check_prints_versions_of_each_host(config_for: Callable[..., Path], sshd_pair: Pair) -> None:
    a, b = sshd_pair
    config = config_for(hosts=[a.host("a", slots=3, labels=["x"]), b.host("b")])
    check = subprocess.run([sys.executable, "-m", "asyncci.cli", "check", "-c", str(config)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "a: ok; OpenSSH_" in check.stdout and "git version" in check.stdout
    assert "; sftp" in check.stdout
    assert "slots=3 labels=[x]" in check.stdout and "b: ok;" in check.stdout


async def test_a_host_that_dies_mid_job_loses_nothing(
    config_for: Callable[..., Path], sshd_pair: Pair
) -> None:
    a, b = sshd_pair
    hosts = [a.host("a", grace="1s"), b.host("b")]
    script = 'echo "start on $ASYNCCI_HOST"; sleep 1; echo end'
    async with running_server(config_for(script, hosts=hosts)) as server, api_for(server) as api:
        await online(api, "a", "b")
        await api.call("POST", "/api/hosts/b/drain")  # the first attempt goes to a
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        job_id = build["jobs"][0]["id"]
        await until(lambda: _contains(api, job_id, "start on a"), 20, "the job on a")
        await api.call("POST", "/api/hosts/b/resume")
        a.stop()
        await until(lambda: _offline(api, "a"), 15, "a offline")
        done = await api.build(build["id"], timeout=30)
        job = done["jobs"][0]
        assert (done["state"], job["host"], job["attempt"]) == ("passed", "b", 2)
        assert job["attempts"][0]["outcome"] == "requeued"
        assert "unreachable" in job["attempts"][0]["reason"]
        log = await log_of(api, job_id)
        assert "[asyncci] attempt 1 lost: host a unreachable" in log
        assert "; it runs again" in log
        a.start()
        await online(api, "a")


async def _contains(api: Api, job_id: int, text: str) -> bool:
    return text in await log_of(api, job_id)


async def test_a_cut_connection_within_grace_reattaches_with_the_whole_log(
    config_for: Callable[..., Path], sshd_pair: Pair
) -> None:
    a, _ = sshd_pair
    script = 'for i in $(seq 1 40); do echo "line $i"; sleep 0.05; done'
    config = config_for(script, hosts=[a.host("a", grace="30s")])
    async with running_server(config) as server, api_for(server) as api:
        await online(api, "a")
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        job_id = build["jobs"][0]["id"]
        await until(lambda: _contains(api, job_id, "line 5\n"), 20, "line 5")
        a.cut()  # only the connection: the job goes on, detached
        done = await api.build(build["id"], timeout=30)
        log = await log_of(api, job_id)
    assert (done["state"], done["jobs"][0]["attempt"]) == ("passed", 1)
    assert [x for x in log.splitlines() if x.startswith("line ")] == [
        f"line {i}" for i in range(1, 41)]


@pytest.mark.parametrize("restart", [False, True], ids=["", "across-a-server-restart"])
async def test_past_grace_the_job_runs_elsewhere_and_the_stale_attempt_is_killed(
    config_for: Callable[..., Path], sshd_pair: Pair, restart: bool
) -> None:
    a, b = sshd_pair
    marker = f"stale-marker-{os.getpid()}"
    script = (f'if [ "$ASYNCCI_HOST" = a ]; then bash -c "sleep 300; : {marker}"; fi;'
              ' echo "ran on $ASYNCCI_HOST"')
    config = config_for(script, hosts=[a.host("a", grace="1s"), b.host("b")])
    async with running_server(config) as server, api_for(server) as api:
        await online(api, "a", "b")
        await api.call("POST", "/api/hosts/b/drain")
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        await until(lambda: marker_processes(marker), 20, "the job on a")
        await api.call("POST", "/api/hosts/b/resume")
        pause(a)  # longer than grace; the job on a goes on meanwhile
        done = await api.build(build["id"], timeout=30)
        assert (done["jobs"][0]["host"], done["jobs"][0]["attempt"]) == ("b", 2)
        assert marker_processes(marker)  # still running on the unreachable host
        if not restart:
            a.start()
            await online(api, "a")
            await until(lambda: not marker_processes(marker), 20, "the stale attempt killed")
            return
    # A new server knows of the stale attempt only from the store.
    async with running_server(config) as server, api_for(server) as api:
        a.start()
        await online(api, "a")
        await until(lambda: not marker_processes(marker), 20, "the stale attempt killed")


async def test_cancel_and_timeout_kill_the_remote_process_group(
    config_for: Callable[..., Path], sshd_pair: Pair
) -> None:
    a, _ = sshd_pair
    marker = f"ssh-kill-marker-{os.getpid()}"
    script = f'bash -c "sleep 300; : {marker}"'
    async with running_server(config_for(script, hosts=[a.host("a", slots=2)], timeout="2s")) \
            as server, api_for(server) as api:
        await online(api, "a")
        timed = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        cancelled = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        await until(lambda: len(marker_processes(marker)) == 2, 20, "both jobs running")
        await api.call("POST", f"/api/builds/{cancelled['id']}/cancel")
        assert (await api.build(cancelled["id"]))["state"] == "cancelled"
        done = await api.build(timed["id"])
        assert (done["state"], done["jobs"][0]["reason"]) == ("failed", "timed out after 2s")
        for build, why in ((done, "timed out after 2s"), (cancelled, "cancelled by a user")):
            log = await log_of(api, build["jobs"][0]["id"])
            assert f"[asyncci] {why}: stopping the job" in log
    assert marker_processes(marker) == []
    # The wrappers and the killers that saw the jobs end leave within moments of them.
    await until(lambda: not processes_under(a.workdir), 10, "nothing left in the workdir")


def test_server_sigkill_reattaches_ssh_jobs(config_for: Callable[..., Path], sshd_pair: Pair) -> None:
    a, b = sshd_pair
    script = 'for i in $(seq 1 40); do echo "line $i"; sleep 0.05; done'
    server = ServerProcess(config_for(script, hosts=[a.host("a"), b.host("b")])).start()
    try:
        until_sync(lambda: all(h["state"] == "online" for h in server.get("/api/hosts")["hosts"]),
                   20, "hosts online")
        ids = [server.post("/api/repos/demo/builds")[1]["id"] for _ in range(2)]
        until_sync(lambda: all(b"line 5\n" in server.get(f"/api/jobs/{i}/log") for i in ids),
                   20, "both jobs running")
        server.kill()
        server.start()
        done = [until_sync(lambda i=i: _finished(server, i), 30, "finished") for i in ids]
        logs = [server.get(f"/api/jobs/{b['jobs'][0]['id']}/log").decode() for b in done]
    finally:
        server.kill()
    for build, log in zip(done, logs):
        assert (build["state"], build["jobs"][0]["attempt"]) == ("passed", 1), build
        assert [x for x in log.splitlines() if x.startswith("line ")] == [
            f"line {i}" for i in range(1, 41)]


def _finished(server: ServerProcess, build_id: int) -> Any:
    build = server.get(f"/api/builds/{build_id}")
    return build if build["finished_at"] else None


async def test_a_host_back_within_grace_keeps_its_job(
    config_for: Callable[..., Path], sshd_pair: Pair
) -> None:
    """Reconnects are tried often while a job waits for its host: one back after 8 s of
    a 12 s grace is seen in time, however many tries failed before."""
    a, _ = sshd_pair
    script = 'echo start; sleep 11; echo end'
    async with running_server(config_for(script, hosts=[a.host("a", grace="12s")])) \
            as server, api_for(server) as api:
        await online(api, "a")
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        job_id = build["jobs"][0]["id"]
        await until(lambda: _contains(api, job_id, "start"), 20, "the job on a")
        pause(a)
        async def noted() -> Any:
            return (await api.get(f"/api/jobs/{job_id}"))["note"]
        note = await until(noted, 10, "the job saying it waits for its host")
        assert note.startswith("host a lost at ") and "; waiting until " in note
        await asyncio.sleep(6)  # the rest of the outage, not a wait for a state
        a.start()
        done = await api.build(build["id"], timeout=30)
    job = done["jobs"][0]
    assert (done["state"], job["attempt"], job["host"]) == ("passed", 1, "a")
    log = await _log_after(server, job_id)
    assert "end" in log and "[asyncci] host a lost at " in log
    assert "[asyncci] host a is back: reattached" in log


async def _log_after(server: Any, job_id: int) -> str:
    return server.logs.read(job_id, 0).decode()


async def test_a_slot_takes_no_new_job_until_its_lost_attempt_is_killed(
    config_for: Callable[..., Path], sshd_pair: Pair
) -> None:
    a, _ = sshd_pair
    marker = f"owed-kill-marker-{os.getpid()}"
    # Attempt 1 takes its time to stop: the slot waits until it is gone, not only told.
    script = (f'if [ "$ASYNCCI_ATTEMPT" = 1 ]; then bash -c ": {marker}; trap \'sleep 2;'
              f' exit\' TERM; while :; do sleep 0.1; done"; fi;'
              f' if pgrep -f {marker} >/dev/null; then echo overlap; else echo alone; fi')
    async with running_server(config_for(script, hosts=[a.host("a", grace="1s", slots=1)])) \
            as server, api_for(server) as api:
        await online(api, "a")
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        await until(lambda: marker_processes(marker), 20, "attempt 1 on a")
        pause(a)  # past grace: attempt 1 is given up on, and still runs there
        job_id = build["jobs"][0]["id"]
        await until(lambda: server.store.owed_kills(), 20, "a kill owed to a")
        a.start()
        done = await api.build(build["id"], timeout=30)
        assert await server.store.owed_kills() == []
    assert (done["state"], done["jobs"][0]["attempt"]) == ("passed", 2)
    assert "alone" in await _log_after(server, job_id)
    assert marker_processes(marker) == []
