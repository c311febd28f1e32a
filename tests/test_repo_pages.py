"""A repo's page, the build lists and the tests page through the real server: the default
branch first, each branch's history, the strip, the badge, filters and keyset pages,
failing/new/flaky tests, and HTML error pages where a person's browser asks."""

from __future__ import annotations

import html as markup
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from asyncci.web import listing
from tests.support.gitrepo import GitRepo
from tests.support.server import api_for, running_server
from tests.test_build_page import build_of, page
from tests.test_pages import browser, login


def builds_listed(html: str) -> list[int]:
    table = html.split('<table class="builds">', 1)[1].split("</table>", 1)[0]
    return [int(n) for n in re.findall(r'<a href="/builds/(\d+)">#', table)]


async def test_repo_page_lists_and_filters(
    config_for: Callable[..., Path], repo: GitRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_server(config_for("sleep 0.2")) as server, api_for(server) as api:
        first = await build_of(api, "main")
        second = await build_of(api, "main")
        repo.git("checkout", "-q", "-b", "feature")
        repo.commit("a feature")
        feature = await build_of(api, "feature")
        url = server.config.server.public_url.rstrip("/")
        async with browser(api) as http:
            repo_page = await page(http, "/repos/demo")
            branch = await page(http, "/repos/demo?branch=feature")
            narrowed = f"/?repo=demo&state=passed&event=manual&before={feature['id']}"
            filtered = await page(http, narrowed)
            empty = await page(http, "/?event=push")
            monkeypatch.setattr(listing, "PAGE", 2)
            newest = await page(http, "/repos/demo")
            older = re.search(r'<a href="(/repos/demo\?[^"]+)">older →</a>', newest)
            assert older, "a full page links to the next"
            rest = await page(http, markup.unescape(older[1]))
            monkeypatch.setattr(listing, "SCAN", 1)  # combined filters look through 1 id
            window = await page(http, "/?repo=demo&state=passed")
        manual = (await api.get("/api/builds?event=manual"))["builds"]
        assert (await api.get("/api/builds?event=push"))["builds"] == []
        assert (await api.call("GET", "/api/builds?event=bogus"))[0] == 400
    assert [b["id"] for b in manual] == [feature["id"], second["id"], first["id"]]
    assert [b["state"] for b in (first, second, feature)] == ["passed"] * 3
    refs = repo_page.split("Branches and pull requests", 1)[1]
    assert refs.index(">main</a> <span class=\"quiet\">default") < refs.index(">feature</a>")
    assert 'href="/repos/demo?branch=feature#builds"' in refs
    assert builds_listed(branch) == [feature["id"]]
    assert builds_listed(filtered) == [second["id"], first["id"]]
    assert "No build matches." in empty and 'value="push" selected' not in empty
    assert "<option selected>push</option>" in empty
    assert builds_listed(newest) == [feature["id"], second["id"]]
    assert builds_listed(rest) == [first["id"]] and "← newest" in rest and "older →" not in rest
    assert builds_listed(window) == [feature["id"]]
    assert f"looked through builds #{feature['id']}–#{feature['id']}" in window
    assert f'before={feature["id"]}">older →' in window
    # Two passing builds of main make its strip; the badge's Markdown is ready to copy.
    strip = repo_page.split('<svg class="strip"', 1)[1].split("</svg>", 1)[0]
    assert strip.count('<rect class="passed"') == 2 and "2 of 2 passed" in repo_page
    badge = f"[![asyncci]({url}/badge/demo.svg?branch=main)]({url}/repos/demo)"
    assert f'value="{markup.escape(badge)}"' in repo_page


async def test_errors_are_pages_for_browsers_and_json_for_the_api(
    config_for: Callable[..., Path]
) -> None:
    async with running_server(config_for()) as server, api_for(server) as api:
        async with browser(api) as http:
            missing = await page(http, "/builds/9999", 404)
            bad_state = await page(http, "/?state=bogus", 400)
            await page(http, "/repos/nope", 404)
            await page(http, "/repos/nope/tests", 404)
            half = await page(http, "/repos/demo/tests?job=build", 400)
            async with http.post("/hosts/local/drain", data={}) as r:
                assert r.status == 403 and "<header>" in await r.text()
            csrf = await login(http)
            async with http.post("/repos/demo/trigger", data={"csrf": csrf, "ref": "nope"}) as r:
                assert r.status == 422
                unknown = await r.text()
            async with http.post("/repos/demo/trigger", data={"csrf": csrf, "ref": "-x"}) as r:
                assert r.status == 422
                option = await r.text()
        status, answer = await api.call("GET", "/api/builds/9999")
    assert status == 404 and answer == {"error": "no build 9999"}
    assert "<header>" in missing and "no build 9999" in missing and "<h1>Not Found</h1>" in missing
    assert "unknown state &#39;bogus&#39;" in bad_state
    assert "both ?job= and ?test= are required" in half
    for html, why in ((unknown, "unknown ref &#39;nope&#39;"), (option, "not a git ref name")):
        form = html.split('class="trigger"', 1)[1].split("</form>", 1)[0]
        assert why in form and 'aria-invalid="true"' in form
    assert 'name="ref" value="nope"' in unknown


JUNIT = '''
[[jobs]]
name = "test"
script = """
o=''
[ -e {flip} ] && o='<failure message="flaky">it depends</failure>'
printf '<testsuite><testcase classname="t" name="test_b">%s</testcase><testcase classname="t" name="test_a"/></testsuite>' "$o" > report.xml
[ ! -e {flip} ]
"""
junit = ["report.xml"]
'''


async def test_tests_page_lists_failing_new_and_flaky(
    config_for: Callable[..., Path], repo: GitRepo, tmp_path: Path
) -> None:
    flip = tmp_path / "flip"
    repo.commit("a pipeline", {".asyncci.toml": JUNIT.replace("{flip}", str(flip))})
    async with running_server(config_for("echo never")) as server, api_for(server) as api:
        async with browser(api) as http:
            before = await page(http, "/repos/demo/tests")
            passed = await build_of(api, "main")
            flip.touch()
            status, again = await api.call("POST", f"/api/builds/{passed['id']}/rebuild")
            failed = await api.build(again["id"], timeout=60)
            overview = await page(http, "/repos/demo/tests")
            history = await page(http, "/repos/demo/tests?job=test&test=t.test_b")
    assert "has test results yet" in before
    assert (passed["state"], failed["state"]) == ("passed", "failed")
    sections = dict(re.findall(r"<h2>([A-Z][a-z ]+) <span class=\"count\">(\d+)</span>", overview))
    assert sections == {"Failing now": "1", "New failures": "1", "Flaky": "1"}
    assert f"failed and passed on {passed['sha'][:10]}" in overview
    assert f'not failing in <a href="/builds/{passed["id"]}">' in overview
    assert "t.test_a" not in overview
    assert history.count('class="state failed"') == 1 and history.count('class="state passed"') == 1
