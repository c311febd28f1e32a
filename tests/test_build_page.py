"""The build page through the real server: the summary of its jobs, failing tests once
across a matrix, rebuilding the failed jobs or one job, "rebuild of" both ways, timeouts
and cancels in their own words, a queued job's place, the progress bar and a Cancel that
asks twice."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.gitrepo import GitRepo
from tests.support.server import Api, api_for, running_server
from tests.test_pages import browser, login

# One lint job, a two-job matrix whose test fails once a FAIL file is committed, and a
# job that then outlives its timeout.
PIPELINE = '''
[[jobs]]
name = "lint"
script = "echo linted"

[[jobs]]
name = "test"
script = """
o='<failure message="boom">File "tests/test_cart.py", line 28</failure>'
[ -e FAIL ] || o=''
printf '<testsuite><testcase classname="test_cart" name="test_case_4">%s</testcase><testcase classname="test_cart" name="test_ok"/></testsuite>' "$o" > report.xml
[ ! -e FAIL ]
"""
junit = ["report.xml"]
matrix = { python = ["3.11", "3.12"] }

[[jobs]]
name = "slow"
script = "if [ -e FAIL ]; then sleep 30; fi"
timeout = "1s"
'''


async def build_of(api: Api, ref: str) -> Any:
    status, build = await api.call("POST", "/api/repos/demo/builds", {"ref": ref})
    assert status == 201, build
    return await api.build(build["id"], timeout=60)


async def page(http: aiohttp.ClientSession, path: str, status: int = 200) -> str:
    async with http.get(path) as r:
        assert r.status == status, (path, r.status)
        assert r.headers["Content-Type"].startswith("text/html")
        return await r.text()


def rows(html: str) -> list[str]:
    """The job names of the summary table, in its order."""
    table = html.split('<table class="summary">', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<a href="#job-\d+">([^<]+)</a>', table)


def section(html: str, job_id: int) -> str:
    return html.split(f'id="job-{job_id}">', 1)[1].split("</section>", 1)[0]


async def test_summary_failing_tests_and_rebuilding_failed_jobs(
    config_for: Callable[..., Path], repo: GitRepo
) -> None:
    repo.commit("a pipeline", {".asyncci.toml": PIPELINE})
    async with running_server(config_for("echo never")) as server, api_for(server) as api:
        base = await build_of(api, "main")
        repo.git("checkout", "-q", "-b", "feature")
        repo.commit("break the cart", {"FAIL": ""})
        broken = await build_of(api, "feature")
        jobs = {j["name"]: j for j in broken["jobs"]}
        async with browser(api) as http:
            html = await page(http, f"/builds/{broken['id']}")
            # The API: the failed jobs again, one job again, and what cannot be rebuilt.
            status, again = await api.call("POST", f"/api/builds/{broken['id']}/rebuild",
                                           {"failed": True})
            assert status == 201 and again["rebuild_of"] == broken["id"]
            status, lint = await api.call("POST", f"/api/builds/{broken['id']}/rebuild",
                                          {"jobs": ["lint"]})
            assert status == 201 and [j["name"] for j in lint["jobs"]] == ["lint"]
            for body, code in (({"jobs": ["nope"]}, 422), ({"jobs": []}, 422),
                               ({"failed": "yes"}, 400), ({"failed": True, "jobs": ["lint"]}, 400)):
                assert (await api.call("POST", f"/api/builds/{broken['id']}/rebuild", body)
                        )[0] == code, body
            status, answer = await api.call("POST", f"/api/builds/{base['id']}/rebuild",
                                            {"failed": True})
            assert status == 409 and "no failed" in answer["error"]
            # The page's forms do the same.
            csrf = await login(http)
            async with http.post(f"/builds/{broken['id']}/rebuild",
                                 data={"csrf": csrf, "job": "test (python=3.12)"},
                                 allow_redirects=False) as r:
                assert r.status == 303
                retried = int(r.headers["Location"].rsplit("/", 1)[1])
            async with http.post(f"/builds/{base['id']}/rebuild",
                                 data={"csrf": csrf, "failed": "1"}) as r:
                assert r.status == 409 and "no failed" in await r.text()
            done = [await api.build(b, timeout=60) for b in (again["id"], lint["id"], retried)]
            after = await page(http, f"/builds/{broken['id']}")
            rebuilt = await page(http, f"/builds/{again['id']}")
            logged_in = await page(http, f"/builds/{broken['id']}")
    assert broken["state"] == "failed" and base["state"] == "passed"
    assert [j["name"] for j in again["jobs"]] == ["test (python=3.11)", "test (python=3.12)",
                                                  "slow"]
    assert [j["name"] for j in done[2]["jobs"]] == ["test (python=3.12)"]
    assert done[2]["rebuild_of"] == broken["id"] and done[0]["state"] == "failed"
    # Failed jobs first, the timeout among them, each a link to its section.
    assert rows(html) == ["test (python=3.11)", "test (python=3.12)", "slow", "lint"]
    assert html.count("1 new ✘") == 2
    assert re.search(r"test_cart\.test_case_4</a>: new failure in 2/2 jobs", html)
    # A timeout says so, never "failed" nor its exit code; only failing sections are open.
    slow = section(html, jobs["slow"]["id"])
    assert '<details class="job" open>' in slow and "timed out" in slow
    assert "exit code 143" not in html and "exit code 1" in section(
        html, jobs["test (python=3.11)"]["id"])
    assert '<details class="job">' in section(html, jobs["lint"]["id"])
    assert "Rebuild failed jobs" not in html  # no session, no forms
    assert "Rebuild failed jobs (3)" in logged_in and "Retry" in logged_in
    assert f'rebuilt as <a href="/builds/{again["id"]}">#{again["id"]}</a>' in after
    assert f'rebuild of <a href="/builds/{broken["id"]}">#{broken["id"]}</a>' in rebuilt


async def test_progress_queue_place_and_a_cancel_that_asks_twice(
    config_for: Callable[..., Path], repo: GitRepo
) -> None:
    script = "if [ -e SLOW ]; then sleep 60; else sleep 1; fi"
    async with running_server(config_for(script)) as server, api_for(server) as api:
        first = await build_of(api, "main")
        repo.commit("slow now", {"SLOW": ""})
        status, slow = await api.call("POST", "/api/repos/demo/builds", {"ref": "main"})
        await api.build(slow["id"], "running")
        await api.call("POST", "/api/hosts/local/drain")
        waiting = (await api.call("POST", "/api/repos/demo/builds", {"ref": "main"}))[1]
        async with browser(api) as http:
            running = await page(http, f"/builds/{slow['id']}")
            queued = await page(http, f"/builds/{waiting['id']}")
            anonymous = await page(http, f"/builds/{slow['id']}/cancel")
            csrf = await login(http)
            confirm = await page(http, f"/builds/{slow['id']}/cancel")
            assert (await api.get(f"/api/builds/{slow['id']}"))["state"] == "running"
            async with http.post(f"/builds/{slow['id']}/cancel", data={"csrf": csrf},
                                 allow_redirects=False) as r:
                assert r.status == 303
            await api.build(slow["id"], "cancelled")
            cancelled = await page(http, f"/builds/{slow['id']}")
            finished = await page(http, f"/builds/{first['id']}/cancel")
        await api.call("POST", f"/api/builds/{waiting['id']}/cancel")
    assert first["state"] == "passed"
    assert re.search(r"running for [\d.]+s", running) and "<progress value=" in running
    assert f'<a href="/builds/{first["id"]}">#{first["id"]}</a> passed in' in running
    assert re.search(r"about [\d.]+s left|[\d.]+s longer than usual", running)
    assert "position 1: host draining" in queued
    assert "Log in</a> to cancel it." in anonymous and 'method="post"' not in anonymous
    assert f'action="/builds/{slow["id"]}/cancel"' in confirm and "No, keep it" in confirm
    assert f'method="get" action="/builds/{slow["id"]}/cancel"' not in cancelled
    assert "cancelled by a user" in cancelled and "exit code" not in cancelled
    assert rows(cancelled) == ["build"] and "state cancelled" in cancelled
    assert "nothing to cancel" in finished
