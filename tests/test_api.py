"""The JSON API: auth, bad input, logs and their live stream, the queue, hosts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.gitrepo import GitRepo
from tests.support.server import api_for, running_server
from tests.support.wait import until


async def test_writes_need_the_token_and_bad_input_changes_nothing(
    config_for: Callable[..., Path]
) -> None:
    async with running_server(config_for()) as server, api_for(server) as api:
        url = api.url
        async with aiohttp.ClientSession() as anonymous:
            for path in ("/api/repos/demo/builds", "/api/builds/1/cancel", "/api/hosts/local/drain",
                         "/hooks/poke/demo"):
                async with anonymous.post(url + path, json={}) as r:
                    assert r.status == 401, path
            async with anonymous.post(url + "/api/repos/demo/builds", json={},
                                      headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401
            async with anonymous.get(url + "/api/builds") as r:
                assert r.status == 200  # reads are public by default
        for method, path, body, status in [
            ("POST", "/api/repos/nope/builds", {}, 404),
            ("POST", "/api/repos/demo/builds", [1], 400),
            ("POST", "/api/repos/demo/builds", {"ref": 5}, 400),
            ("POST", "/api/repos/demo/builds", {"ref": "no-such-branch"}, 422),
            ("POST", "/api/repos/demo/builds", {"sha": "not-a-sha"}, 422),
            ("POST", "/api/repos/demo/builds", {"ref": "--upload-pack=touch /tmp/x"}, 422),
            ("GET", "/api/builds/12345", None, 404),
            ("GET", "/api/builds/abc", None, 404),
            ("GET", "/api/jobs/999/log", None, 404),
            ("GET", "/api/builds?limit=lots", None, 400),
            ("GET", "/api/builds?state=bogus", None, 400),
            ("POST", "/api/hosts/nope/drain", None, 404),
            ("POST", "/hooks/poke/nope", None, 404),
        ]:
            got, answer = await api.call(method, path, body)
            assert got == status, (path, body, answer)
            assert "error" in answer
        assert (await api.get("/api/builds"))["builds"] == []


async def test_private_server_hides_reads(config_for: Callable[..., Path], tmp_path: Path) -> None:
    text = config_for().read_text().replace("[web]\n", "[web]\npublic = false\n")
    (tmp_path / "asyncci.toml").write_text(text)
    async with running_server(tmp_path / "asyncci.toml") as server, api_for(server) as api:
        async with aiohttp.ClientSession() as anonymous:
            for path, status in (("/api/builds", 401), ("/api/hosts", 401), ("/healthz", 200)):
                async with anonymous.get(api.url + path) as r:
                    assert r.status == status, path
        assert (await api.get("/api/builds"))["builds"] == []  # with the token


async def test_log_offsets_and_the_live_stream(config_for: Callable[..., Path]) -> None:
    script = 'for i in $(seq 1 30); do echo "line $i é"; sleep 0.02; done'
    async with running_server(config_for(script)) as server, api_for(server) as api:
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        job_id = build["jobs"][0]["id"]
        events = await sse(api.url + f"/api/jobs/{job_id}/log/stream")
        text = "".join(data for kind, _, data in events if kind == "log")
        assert [line for line in text.splitlines() if line.startswith("line")] == [
            f"line {i} é" for i in range(1, 31)]
        assert events[-1][0] == "state" and '"state": "passed"' in events[-1][2]
        last_id = int([i for kind, i, _ in events if kind == "log"][-1])
        full = (await api.call("GET", f"/api/jobs/{job_id}/log"))[1]
        assert last_id == len(full)
        async with aiohttp.ClientSession() as http:
            async with http.get(api.url + f"/api/jobs/{job_id}/log?offset=10") as r:
                assert r.headers["X-Log-Complete"] == "1"
                assert await r.read() == full[10:]
        resumed = await sse(api.url + f"/api/jobs/{job_id}/log/stream",
                            {"Last-Event-ID": str(len(full) - 5)})
        assert "".join(d for k, _, d in resumed if k == "log") == full[-5:].decode()


async def sse(url: str, headers: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(event, id, data) of a whole Server-Sent Events stream."""
    events, kind, event_id, data = [], "message", "", []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.get(url, headers=headers) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if not line:
                    if data:
                        events.append((kind, event_id, "\n".join(data)))
                    kind, data = "message", []
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    data.append(line[6:])
    return events


async def test_queue_explains_every_wait(config_for: Callable[..., Path], tmp_path: Path) -> None:
    hosts = [{"name": "small", "type": "local", "slots": 1, "workdir": str(tmp_path / "w")}]
    async with running_server(config_for("sleep 30", hosts=hosts, max_running=1)) as server, \
            api_for(server) as api:
        builds = [(await api.call("POST", "/api/repos/demo/builds", {}))[1] for _ in range(3)]
        await api.build(builds[0]["id"], "running")
        queue = (await api.get("/api/queue"))["jobs"]
        assert [j["position"] for j in queue] == [1, 2]
        assert [j["build_id"] for j in queue] == [builds[1]["id"], builds[2]["id"]]
        assert {j["reason"] for j in queue} == {"repo at max_running"}
        assert all(j["repo"] == "demo" and j["waited_s"] >= 0 for j in queue)
        for build in builds:
            await api.call("POST", f"/api/builds/{build['id']}/cancel")
        await until(lambda: [h.busy for h in server.scheduler.host_statuses()
                             if h.name == "small"] == [0], 20)


async def test_drained_host_takes_nothing_and_stays_drained(
    config_for: Callable[..., Path]
) -> None:
    config = config_for()
    async with running_server(config) as server, api_for(server) as api:
        status, host = await api.call("POST", "/api/hosts/local/drain")
        assert (status, host["state"]) == (200, "draining")
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        queued = (await api.get("/api/queue"))["jobs"]
        assert [(j["build_id"], j["reason"]) for j in queued] == [(build["id"], "host draining")]
    async with running_server(config) as server, api_for(server) as api:
        hosts = (await api.get("/api/hosts"))["hosts"]
        assert [(h["name"], h["state"], h["busy"], h["slots"]) for h in hosts] == [
            ("local", "draining", 0, 2)]
        assert (await api.get(f"/api/builds/{build['id']}"))["state"] == "queued"
        await api.call("POST", "/api/hosts/local/resume")
        assert (await api.build(build["id"]))["state"] == "passed"


async def test_rebuild_runs_the_stored_pipeline_again(config_for: Callable[..., Path]) -> None:
    async with running_server(config_for("echo one")) as server, api_for(server) as api:
        first = (await api.call("POST", "/api/repos/demo/builds", {"ref": "main"}))[1]
        await api.build(first["id"])
        status, again = await api.call("POST", f"/api/builds/{first['id']}/rebuild")
        assert status == 201 and again["id"] != first["id"]
        assert (again["sha"], again["ref"], again["event"]) == (first["sha"], first["ref"], "manual")
        assert (await api.build(again["id"]))["state"] == "passed"


async def test_pages_render_real_data_and_keep_hostile_text_as_text(
    config_for: Callable[..., Path], repo: GitRepo
) -> None:
    repo.commit("<script>alert('x')</script> & \"quotes\"")
    async with running_server(config_for("echo '<b>bold</b>'")) as server, api_for(server) as api:
        build = (await api.call("POST", "/api/repos/demo/builds", {"ref": "main"}))[1]
        await api.build(build["id"])
        async with aiohttp.ClientSession() as http:
            for path in ("/", f"/builds/{build['id']}", "/static/asyncci.css"):
                async with http.get(api.url + path) as r:
                    assert r.status == 200, path
            async with http.get(api.url + f"/builds/{build['id']}") as r:
                page = await r.text()
            async with http.get(api.url + "/builds/999") as r:
                assert r.status == 404
            async with http.get(api.url + "/") as r:
                dashboard = await r.text()
    for html in (page, dashboard):
        assert "<script>alert" not in html and "&lt;script&gt;alert(" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "passed" in dashboard


async def test_badges_metrics_and_security_headers(config_for: Callable[..., Path]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    async with running_server(config_for("sleep 0.2")) as server, api_for(server) as api:
        async with aiohttp.ClientSession() as http:
            async def get(path: str) -> tuple[int, str, Any]:
                async with http.get(api.url + path) as r:
                    return r.status, await r.text(), r.headers

            assert (await get("/badge/nope.svg"))[0] == 404
            status, svg, headers = await get("/badge/demo.svg?branch=main")
            assert status == 200 and headers["Content-Type"].startswith("image/svg+xml")
            assert ">unknown<" in svg
            build = (await api.call("POST", "/api/repos/demo/builds", {"ref": "main"}))[1]
            await api.build(build["id"])
            assert ">passed<" in (await get("/badge/demo.svg?branch=main"))[1]
            assert ">unknown<" in (await get("/badge/demo.svg?branch=other"))[1]
            status, text, _ = await get("/metrics")
            for path in ("/", "/api/builds", "/metrics"):
                headers = (await get(path))[2]
                assert "script-src 'self'" in headers["Content-Security-Policy"]
                assert headers["X-Content-Type-Options"] == "nosniff"
                assert headers["Referrer-Policy"] == "same-origin"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("asyncci_builds", (("state", "passed"),))] == 1
    assert samples[("asyncci_jobs", (("state", "queued"),))] == 0
    assert samples[("asyncci_queue_length", ())] == 0
    assert samples[("asyncci_job_duration_seconds_count", ())] == 1
    assert samples[("asyncci_job_duration_seconds_bucket", (("le", "1.0"),))] == 1
    assert samples[("asyncci_job_queue_wait_seconds_count", ())] == 1
    assert samples[("asyncci_host_up", (("host", "local"),))] == 1
    assert samples[("asyncci_host_slots", (("host", "local"),))] == 2
