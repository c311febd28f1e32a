"""The HTML pages: every page with real data, hostile text kept as text, login, CSRF,
the forms, and a private server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from tests.support.gitrepo import GitRepo
from tests.support.server import TOKEN, Api, api_for, running_server

HOSTILE = "<script>alert('x')</script> & \"quotes\""


@asynccontextmanager
async def browser(api: Api) -> AsyncIterator[aiohttp.ClientSession]:
    """A cookie-keeping client, like a browser (without JavaScript)."""
    async with aiohttp.ClientSession(api.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield http


async def login(http: aiohttp.ClientSession) -> str:
    """Log in; the CSRF token the pages then carry."""
    async with http.post("/login", data={"token": TOKEN, "next": "/hosts"},
                         allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/hosts"
        cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    async with http.get("/hosts") as r:
        match = re.search(r'name="csrf" value="([0-9a-f]+)"', await r.text())
    assert match, "a logged-in page carries a CSRF token"
    return match[1]


async def test_every_page_renders_real_data_and_keeps_hostile_text_as_text(
    config_for: Callable[..., Path], repo: GitRepo
) -> None:
    repo.git("checkout", "-q", "-b", "x<b>bold-branch</b>")
    repo.commit(HOSTILE)
    script = "printf '\\033[31mred\\033[0m <b>bold</b>\\n'; echo line two"
    async with running_server(config_for(script)) as server, api_for(server) as api:
        build = (await api.call("POST", "/api/repos/demo/builds",
                                {"ref": "x<b>bold-branch</b>"}))[1]
        await api.build(build["id"])
        await api.call("POST", "/api/hosts/local/drain")
        queued = (await api.call("POST", "/api/repos/demo/builds", {"ref": "main"}))[1]
        async with browser(api) as http:
            pages = {}
            for path in ("/", "/queue", "/hosts", "/repos/demo", f"/builds/{build['id']}",
                         "/login"):
                async with http.get(path) as r:
                    assert r.status == 200, path
                    assert r.headers["Content-Type"].startswith("text/html")
                    pages[path] = await r.text()
            for path in ("/repos/nope", "/builds/999"):
                async with http.get(path) as r:
                    assert r.status == 404, path
    for path, html in pages.items():
        assert "<script>alert" not in html, path
        assert "<script src=\"/static/asyncci.js\" defer></script>" in html
    page = pages[f"/builds/{build['id']}"]
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert '<span class="c-red">red</span> &lt;b&gt;bold&lt;/b&gt;' in page
    assert re.search(r'href="#j\d+-L\d+">2</a>', page)  # numbered, linkable lines
    assert "passed" in pages["/"] and "demo" in pages["/repos/demo"]
    assert "x&lt;b&gt;bold-branch&lt;/b&gt;" in pages["/repos/demo"] and "<b>bold" not in page
    assert f"#{queued['id']} build" in pages["/queue"] and "host draining" in pages["/queue"]
    assert "Log in" in page and 'action="/builds/' not in page  # no forms without a session


async def test_login_logout_and_csrf(config_for: Callable[..., Path]) -> None:
    async with running_server(config_for("sleep 30")) as server, api_for(server) as api:
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        async with browser(api) as http:
            async with http.post("/login", data={"token": "wrong"}) as r:
                assert r.status == 401 and "not the token" in await r.text()
            async with http.post(f"/builds/{build['id']}/cancel", data={},
                                 allow_redirects=False) as r:
                assert r.status == 403  # no session
            csrf = await login(http)
            async with http.post(f"/builds/{build['id']}/cancel", data={"csrf": "f" * 64},
                                 allow_redirects=False) as r:
                assert r.status == 403  # a forged form
            assert (await api.get(f"/api/builds/{build['id']}"))["state"] in ("queued", "running")
            async with http.post(f"/builds/{build['id']}/cancel", data={"csrf": csrf},
                                 allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == f"/builds/{build['id']}"
            assert (await api.build(build["id"], "cancelled"))["state"] == "cancelled"
            async with http.post(f"/builds/{build['id']}/rebuild", data={"csrf": csrf},
                                 allow_redirects=False) as r:
                assert r.status == 303
                rebuilt = int(r.headers["Location"].rsplit("/", 1)[1])
            assert (await api.get(f"/api/builds/{rebuilt}"))["sha"] == build["sha"]
            async with http.post("/hosts/local/drain", data={"csrf": csrf},
                                 allow_redirects=False) as r:
                assert r.status == 303
            assert (await api.get("/api/hosts"))["hosts"][0]["state"] == "draining"
            async with http.post("/repos/demo/trigger", data={"csrf": csrf, "ref": "main"},
                                 allow_redirects=False) as r:
                assert r.status == 303
            async with http.post("/logout", data={"csrf": csrf}, allow_redirects=False) as r:
                assert r.status == 303
            async with http.post("/hosts/local/resume", data={"csrf": csrf},
                                 allow_redirects=False) as r:
                assert r.status == 403  # logged out
        for b in (await api.get("/api/builds"))["builds"]:
            await api.call("POST", f"/api/builds/{b['id']}/cancel")


async def test_login_never_redirects_off_site(config_for: Callable[..., Path]) -> None:
    async with running_server(config_for()) as server, api_for(server) as api:
        async with browser(api) as http:
            for target in ("//evil.example/", "https://evil.example/", "evil"):
                async with http.post("/login", data={"token": TOKEN, "next": target},
                                     allow_redirects=False) as r:
                    assert r.headers["Location"] == "/", target


async def test_a_private_server_shows_nothing_before_login(
    config_for: Callable[..., Path], tmp_path: Path
) -> None:
    text = config_for().read_text().replace("[web]\n", "[web]\npublic = false\n")
    (tmp_path / "asyncci.toml").write_text(text)
    async with running_server(tmp_path / "asyncci.toml") as server, api_for(server) as api:
        async with browser(api) as http:
            for path in ("/", "/hosts", "/repos/demo", "/builds/1"):
                async with http.get(path, allow_redirects=False) as r:
                    assert r.status == 303 and r.headers["Location"].startswith("/login?next=")
            for path in ("/api/builds", "/metrics", "/badge/demo.svg"):
                async with http.get(path, allow_redirects=False) as r:
                    assert r.status in (303, 401), path
            async with http.get("/login") as r:
                assert r.status == 200
            await login(http)
            async with http.get("/") as r:
                assert r.status == 200 and "Recent builds" in await r.text()
            async with http.get("/api/builds") as r:
                assert r.status == 200  # the session opens the API's reads too
