"""One real browser (Debian's headless Chromium, driven by Playwright) per test: a build page
follows its running job's log inside the log's box (never moving the page), lets go when
the reader scrolls up and follows again at the end; the in-place refresh keeps what the
reader opened and ticked; the tab's title and icon follow the state; sections fold and a
link to a line shows it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Page, async_playwright

from tests.support.server import Api, api_for, running_server

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Functions, not expressions: the pages' Content-Security-Policy forbids eval.
LINES = "() => document.querySelectorAll('.logbox .log .line').length"
AT_BOTTOM = """() => { const l = document.querySelector('.log');
                      return l.scrollHeight - l.scrollTop - l.clientHeight < 8; }"""
FOLLOWING = "() => document.querySelector('.follow input').checked"


@asynccontextmanager
async def browser_page(tmp_path: Path) -> AsyncIterator[Page]:
    """A page of a fresh Chromium that fails the test on any script error."""
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = await chromium.new_page(viewport={"width": 1000, "height": 700})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page
            await page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            assert errors == []
        finally:
            await chromium.close()


@asynccontextmanager
async def running_build(api: Api) -> AsyncIterator[tuple[Any, int]]:
    """A build, once running, and its job's id; cancelled at the end, pass or fail, so no
    job outlives the test."""
    build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
    try:
        build = await api.build(build["id"], "running")
        yield build, build["jobs"][0]["id"]
    finally:
        await api.call("POST", f"/api/builds/{build['id']}/cancel")
        await api.build(build["id"])


async def grown(page: Page, more: int = 5) -> None:
    """Wait until the log shows `more` lines more than now."""
    now = await page.evaluate(LINES)
    await page.wait_for_function(f"n => ({LINES})() >= n", arg=now + more, timeout=15_000)


async def refreshed(page: Page) -> None:
    """Wait for the page's next in-place refresh (it replaces <main>)."""
    await page.evaluate("() => { document.querySelector('main').dataset.old = ''; }")
    await page.wait_for_function("() => !('old' in document.querySelector('main').dataset)",
                                 timeout=15_000)


async def test_follow_stays_in_the_box_lets_go_on_scroll_up_and_survives_refresh(
    config_for: Callable[..., Path], tmp_path: Path
) -> None:
    script = ('for i in $(seq 1 60); do echo "early $i"; done; '
              'for i in $(seq 1 400); do printf "\\033[32mstep %s\\033[0m\\n" $i; sleep 0.1; '
              '[ $i = 20 ] && printf -- "get 10%%\\rget 100%%\\nsee https://example.org/x\\n'
              '--- a/diff\\n+++ b/diff\\n--- later\\n"; done')
    async with running_server(config_for(script)) as server, api_for(server) as api, \
            running_build(api) as (build, job), browser_page(tmp_path) as page:
        await page.goto(f"{api.url}/builds/{build['id']}")
        follow = page.locator(f"#log-{job} .follow input")
        await grown(page)
        assert await follow.is_checked() and await page.evaluate(AT_BOTTOM)
        assert await page.evaluate("window.scrollY") == 0  # the page never moved
        assert await page.locator(".log .c-green").count() > 5

        await page.hover(f"#log-{job} .log")
        await page.mouse.wheel(0, -3000)  # the reader scrolls up: the log lets go
        await page.wait_for_function(f"() => !({FOLLOWING})()")
        top = await page.evaluate("document.querySelector('.log').scrollTop")
        await grown(page)
        assert await page.evaluate("document.querySelector('.log').scrollTop") == top
        await page.mouse.wheel(0, 100_000)  # back at the end: it follows again
        await page.wait_for_function(FOLLOWING)
        await grown(page)
        assert await page.evaluate(AT_BOTTOM)

        await refreshed(page)  # the box and its switch survive the refresh...
        await follow.uncheck()  # ...and unticking it holds
        assert await page.evaluate("localStorage.getItem('asyncci.follow')") == "off"
        scrolled = await page.evaluate("window.scrollY")  # Playwright showed the switch
        await refreshed(page)
        await grown(page)
        assert not await follow.is_checked() and not await page.evaluate(AT_BOTTOM)
        assert await page.evaluate("window.scrollY") == scrolled
        text = await page.locator(".log").inner_text()
        assert "early 1\n" in text and "step 3\n" in text
        assert "get 100%" in text and "get 10%" not in text  # a progress bar's last state
        assert await page.locator("a[href='https://example.org/x']").count() == 1
        # a section, and a diff that looks like one but is not
        assert await page.locator(".log details.section .title").all_inner_texts() == ["later"]
        assert await page.locator(".log details.section[open]").count() == 1
        # The lines the script added are numbered as the server numbers them.
        shown = dict(await page.evaluate("""() => [...document.querySelectorAll('.log .line')]
            .map(l => [l.textContent.match(/step (\\d+)/)?.[1], l.id]).filter(p => p[0])"""))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{api.url}/builds/{build['id']}") as r:
                served = dict((step, f"j{job}-L{n}") for n, step in re.findall(
                    rf'id="j{job}-L(\d+)">(?:(?!id=)[^\n])*?step (\d+)<', await r.text()))
        both = shown.keys() & served.keys()
        assert len(both) > 50 and {k: (shown[k], served[k]) for k in both
                                   if shown[k] != served[k]} == {}


SECTIONS = r"""
echo '::group::set up'
echo 'installing https://example.org/tool'
echo '::endgroup::'
echo '--- build'
for i in $(seq 1 40); do echo "compile $i"; done
for i in $(seq 1 300); do [ -e "$GO" ] && break; sleep 0.1; done
echo '--- test'
echo 'FAILED tests/test_cart.py'
exit 1
"""


async def test_sections_survive_refresh_the_tab_follows_the_state_and_anchors_show_lines(
    config_for: Callable[..., Path], tmp_path: Path
) -> None:
    go = tmp_path / "go"
    async with running_server(config_for(SECTIONS, env={"GO": str(go)})) as server, \
            api_for(server) as api, running_build(api) as (build, job), \
            browser_page(tmp_path) as page:
        page_url = f"{api.url}/builds/{build['id']}"
        await page.goto(page_url)
        setup = page.locator(f"#j{job}-S2")
        await setup.wait_for(state="attached")
        assert "running" in await page.title()
        assert not await setup.evaluate("d => d.open")
        await page.locator(f"#j{job}-L2").click()  # the reader opens "set up"...
        query = page.locator(f"#log-{job} input[name=q]")
        await query.fill("compile")  # ...and types a search without sending it yet
        await page.locator("h1").click()
        await refreshed(page)
        assert await setup.evaluate("d => d.open")
        go.touch()  # the job goes on, fails, and the page shows its final state
        await page.locator("h1 .state.failed").wait_for(timeout=30_000)
        await page.wait_for_function("() => document.title.includes('failed')")
        assert await setup.evaluate("d => d.open")  # kept through the final refresh
        assert await query.input_value() == "compile"
        sections = page.locator(f"#log-{job} details.section")
        assert await sections.evaluate_all("ds => ds.map(d => d.open)") == [True, False, True]
        assert await page.evaluate(AT_BOTTOM)  # the box opens at the end, where the error is
        icon = await page.evaluate("document.querySelector('link[rel~=icon]').href")
        assert icon.startswith("data:image/svg+xml,") and "cf222e" in icon
        assert await page.locator(f"#j{job}-L3 a[rel='nofollow noopener']").count() == 1

        await page.goto(f"{page_url}#j{job}-L30")  # a line in the closed "build" section
        line = page.locator(f"#j{job}-L30")
        await line.wait_for(state="visible")
        assert "compile 25" in await line.inner_text()
        inside = await line.evaluate("""l => {
            const box = l.closest('.log').getBoundingClientRect(), r = l.getBoundingClientRect();
            return r.top >= box.top && r.bottom <= box.bottom && r.bottom <= innerHeight;
        }""")
        assert inside

        await page.locator(f"#log-{job} [data-toggle=times]").click()  # in place, remembered
        assert await page.locator(f"#j{job}-L30 .t").is_visible()
        assert await page.evaluate("localStorage.getItem('asyncci.times')") == "on"
        assert page.url == f"{page_url}#j{job}-L30"
        await page.set_viewport_size({"width": 390, "height": 800})  # a phone: the box fits
        box = await page.locator(f"#log-{job}").evaluate("b => b.getBoundingClientRect().right")
        assert box <= 390
