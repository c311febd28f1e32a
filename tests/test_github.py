"""GitHub: signed webhooks, pull requests, commit statuses through a retrying outbox,
the poke URL and cron, against a recording stand-in for GitHub's API."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from asyncci.config import load_config
from asyncci.server import Server
from asyncci.store import Store
from tests.support.config import make_config
from tests.support.github import FakeGitHub, fake_github, payload, signed
from tests.support.gitrepo import GitRepo
from tests.support.server import Api, ServerProcess, api_for, running_server
from tests.support.wait import until

SECRET = "webhook-secret-for-tests"
ENV = {"ASYNCCI_WEBHOOK_SECRET": SECRET, "GITHUB_TOKEN": "gh-token", "DEMO_SECRET": "topsecret!"}


@pytest.fixture(autouse=True)
def github_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)


def config(tmp_path: Path, repo: GitRepo, github: FakeGitHub, script: str = "echo ok", **keys: Any
           ) -> Path:
    return make_config(
        tmp_path,
        [{"name": "demo", "url": str(repo.path), "github": "Octo/Demo", "pull_requests": True,
          "script": script, "secrets": {"DEMO_SECRET": {"env": "DEMO_SECRET"}}, **keys}],
        hosts=[{"name": "local", "type": "local", "slots": 2, "workdir": str(tmp_path / "work")}],
        github={"api_url": github.url},
    )


@asynccontextmanager
async def serving(tmp_path: Path, repo: GitRepo, script: str = "echo ok", **keys: Any
                  ) -> AsyncIterator[tuple[Server, Api, FakeGitHub]]:
    async with fake_github() as github:
        async with running_server(config(tmp_path, repo, github, script, **keys)) as server:
            async with api_for(server) as api:
                yield server, api, github


async def deliver(api: Api, event: str, body: bytes, delivery: str = "d-1",
                  headers: dict[str, str] | None = None) -> tuple[int, Any]:
    sent = headers if headers is not None else signed(body, SECRET, event, delivery)
    async with aiohttp.ClientSession() as http:
        async with http.post(api.url + "/hooks/github", data=io.BytesIO(body), headers=sent) as r:
            return r.status, await r.read()


def push(repo: GitRepo, branch: str = "main", message: str = "pushed") -> bytes:
    return payload("push", branch=branch, sha=repo.head(), message=message,
                   repository="octo/demo")


async def builds(api: Api) -> list[Any]:
    return list((await api.get("/api/builds"))["builds"])


async def test_a_signed_push_makes_one_build_however_often_it_arrives(
    tmp_path: Path, repo: GitRepo
) -> None:
    async with serving(tmp_path, repo) as (server, api, _):
        body = push(repo)
        for _ in range(2):  # a redelivery
            status, _ = await deliver(api, "push", body, "same-delivery")
            assert status == 202
        await deliver(api, "push", body, "another-delivery")
        await until(lambda: builds(api), 10, "the build")
        await server.pollers["demo"].poll()  # the poller sees the same push, and is done
        [build] = await builds(api)
        assert (build["sha"], build["event"], build["ref"]) == (repo.head(), "push", "refs/heads/main")
        assert build["message"] == "pushed"


async def test_forged_or_malformed_deliveries_change_nothing(tmp_path: Path, repo: GitRepo) -> None:
    async with serving(tmp_path, repo) as (_, api, _):
        body = push(repo)
        good = signed(body, SECRET, "push", "d")
        sha1_only = {k: v for k, v in good.items() if k != "X-Hub-Signature-256"}
        sha1_only["X-Hub-Signature"] = "sha1=" + "0" * 40
        cases = [
            (signed(body, "wrong-secret", "push", "d"), body, 401),
            ({k: v for k, v in good.items() if k != "X-Hub-Signature-256"}, body, 401),
            (sha1_only, body, 401),
            ({k: v for k, v in good.items() if k != "X-GitHub-Event"}, body, 400),
            ({k: v for k, v in good.items() if k != "X-GitHub-Delivery"}, body, 400),
            ({**signed(b"{nope", SECRET, "push", "d")}, b"{nope", 400),
            ({**signed(b"[1]", SECRET, "push", "d")}, b"[1]", 400),
            ({**good, "Content-Type": "application/x-www-form-urlencoded"}, body, 400),
            (signed(b'{"repository": 5}', SECRET, "push", "d"), b'{"repository": 5}', 400),
        ]
        for headers, sent, expected in cases:
            status, answer = await deliver(api, "push", sent, headers=headers)
            assert status == expected, (headers, answer)
        assert await builds(api) == []


async def test_body_size_caps(tmp_path: Path, repo: GitRepo) -> None:
    async with serving(tmp_path, repo) as (_, api, _):
        big = b" " * (30 * 1024 * 1024)
        status, _ = await deliver(api, "push", big)
        assert status == 413
        pushed = json.loads(push(repo))
        pushed["padding"] = "x" * (20 * 1024 * 1024)
        status, _ = await deliver(api, "push", json.dumps(pushed).encode())
        assert status == 202
        await until(lambda: builds(api), 10, "the 20 MB delivery's build")
        status, answer = await deliver(api, "ping", payload("ping", repository="octo/demo"))
        assert status == 200 and b"pong" in answer


async def test_pull_requests_forks_synchronize_and_close(tmp_path: Path, repo: GitRepo) -> None:
    first = repo.commit("pr head 1")
    repo.git("update-ref", "refs/pull/7/head", first)
    script = 'echo "secret=[$DEMO_SECRET] pr=$ASYNCCI_PR"; sleep 30'
    async with serving(tmp_path, repo, script) as (_, api, _):
        def pr(action: str, sha: str, head: str) -> bytes:
            return payload("pull_request", action=action, number="7", sha=sha,
                           repository="octo/demo", head_repository=head)
        await deliver(api, "pull_request", pr("opened", first, "stranger/demo"), "p1")
        [old] = await until(lambda: builds(api), 10, "the PR build")
        assert (old["event"], old["pr"], old["ref"]) == ("pull_request", 7, "refs/pull/7/head")
        job = old["jobs"][0]["id"]
        await until(lambda: _log_has(api, job, "pr=7"), 15, "the PR job")
        assert "secret=[]" in await _log(api, job)  # a fork gets no secrets
        second = repo.commit("pr head 2")
        repo.git("update-ref", "refs/pull/7/head", second)
        await deliver(api, "pull_request", pr("synchronize", second, "octo/demo"), "p2")
        assert (await api.build(old["id"], "cancelled"))["jobs"][0]["reason"].startswith("superseded")
        new = next(b for b in await builds(api) if b["sha"] == second)
        await until(lambda: _log_has(api, new["jobs"][0]["id"], "pr=7"), 15, "the new head")
        assert "secret=[***]" in await _log(api, new["jobs"][0]["id"])  # same repo: secrets
        await deliver(api, "pull_request", pr("closed", second, "octo/demo"), "p3")
        closed = await api.build(new["id"], "cancelled")
        assert closed["jobs"][0]["reason"] == "pull request 7 closed"


async def _log(api: Api, job_id: int) -> str:
    return str((await api.call("GET", f"/api/jobs/{job_id}/log"))[1].decode())


async def _log_has(api: Api, job_id: int, text: str) -> bool:
    return text in await _log(api, job_id)


async def test_statuses_arrive_in_order_and_survive_bad_gateways(
    tmp_path: Path, repo: GitRepo
) -> None:
    async with serving(tmp_path, repo) as (_, api, github):
        github.failures = [502, 502]
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        await api.build(build["id"])
        await until(lambda: len(github.statuses) == 3, 20, "three statuses")
    assert github.contexts() == [("asyncci/build", "pending"), ("asyncci/build", "pending"),
                                 ("asyncci/build", "success")]
    first = github.statuses[0]
    assert first["repo"] == "Octo/Demo" and first["sha"] == build["sha"]
    assert first["target_url"] == f"{api.url}/builds/{build['id']}"
    assert first["description"].startswith("queued")
    assert github.tokens[-1] == "token gh-token"


async def test_a_late_status_says_what_was_true_when_its_state_changed(
    tmp_path: Path, repo: GitRepo
) -> None:
    """GitHub answers slowly (three bad gateways): by the time the queued status goes out
    the job has run, and the status still tells where it stood in the queue and why."""
    async with serving(tmp_path, repo) as (_, api, github):
        github.failures = [502, 502, 502]
        await api.call("POST", "/api/hosts/local/drain")
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        await until(lambda: github.failures == [502], 20, "GitHub refusing the first status")
        await api.call("POST", "/api/hosts/local/resume")
        await api.build(build["id"])
        await until(lambda: len(github.statuses) == 3, 30, "three statuses")
    assert [s["description"] for s in github.statuses] == [
        "queued: position 1, host draining", "running on local", "passed"]


async def test_rate_limits_are_waited_out_and_app_tokens_used(
    tmp_path: Path, repo: GitRepo
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "app.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    async with fake_github() as github:
        path = make_config(
            tmp_path, [{"name": "demo", "url": str(repo.path), "github": "octo/demo",
                        "script": "true"}],
            hosts=[{"name": "local", "type": "local", "slots": 1, "workdir": str(tmp_path / "w")}],
            github={"api_url": github.url, "app_id": 1, "private_key_file": "app.pem"})
        github.failures = [403]
        async with running_server(path) as server, api_for(server) as api:
            build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
            await api.build(build["id"])
            await until(lambda: len(github.statuses) == 3, 20, "statuses after the limit")
    assert github.app_calls == ["bearer", "token for installation 42"]  # a JWT; cached after
    assert set(github.tokens) == {"token installation-token"}
    assert len(github.tokens) == 4  # one refused by the rate limit, three accepted


async def test_statuses_not_acknowledged_before_a_crash_are_sent_after_it(
    tmp_path: Path, repo: GitRepo
) -> None:
    async with fake_github() as github:
        github.failures = [500] * 1000  # GitHub is down while the build runs
        server = ServerProcess(config(tmp_path, repo, github))
        await asyncio.to_thread(server.start)
        try:
            build = (await asyncio.to_thread(server.post, "/api/repos/demo/builds"))[1]
            await until(lambda: _finished(server, build["id"]), 20, "the build")
            await until(lambda: len(github.failures) < 997, 20, "some failed sends")
            server.kill()
            github.failures = []
            await asyncio.to_thread(server.start)
            await until(lambda: len(github.statuses) >= 3, 20, "the statuses")
            await until(lambda: _outbox_empty(server), 20, "an empty outbox: nothing more comes")
        finally:
            server.kill()
    assert github.contexts() == [("asyncci/build", "pending"), ("asyncci/build", "pending"),
                                 ("asyncci/build", "success")]


async def _outbox_empty(server: ServerProcess) -> bool:
    store = await Store.open(load_config(server.config).server.data_dir / "asyncci.db")
    try:
        return not await store.pending_outbox()
    finally:
        await store.close()


async def _finished(server: ServerProcess, build_id: int) -> bool:
    build = await asyncio.to_thread(server.get, f"/api/builds/{build_id}")
    return bool(build["finished_at"])


async def test_a_poke_polls_now(tmp_path: Path, repo: GitRepo) -> None:
    async with serving(tmp_path, repo) as (_, api, _):
        status, answer = await api.call("POST", "/hooks/poke/demo")
        assert status == 202, answer
        [build] = await until(lambda: builds(api), 10, "the poked build")
        assert build["event"] == "poll"


async def test_a_missed_schedule_fires_at_start(tmp_path: Path, repo: GitRepo) -> None:
    """Once, however many slots went by: tests/test_cron.py asks that of Cron directly."""
    async with fake_github() as github:
        path = config(tmp_path, repo, github, schedule="0 0 1 1 *")  # yearly, long past
        async with running_server(path) as server:
            repo_config = server.config.repos[0]
            await server.planner.cron(repo_config, datetime(2020, 1, 1, tzinfo=timezone.utc))
        async with running_server(path) as server, api_for(server) as api:
            async def two_crons() -> list[Any] | None:
                crons = [b for b in await builds(api) if b["event"] == "cron"]
                return crons if len(crons) == 2 else None

            crons = await until(two_crons, 10, "the missed slot's build")
    assert crons[0]["ref"] == "refs/heads/main"
