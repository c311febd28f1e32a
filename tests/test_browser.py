"""One real browser (Debian's headless Chromium, driven by Playwright): a build page
follows its running job's log live and shows the state change without a reload."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.async_api import async_playwright

from tests.support.server import api_for, running_server

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


async def test_a_build_page_follows_the_log_and_the_state(
    config_for: Callable[..., Path], tmp_path: Path
) -> None:
    script = 'for i in $(seq 1 30); do printf "\\033[32mstep %s\\033[0m\\n" $i; sleep 0.2; done'
    async with running_server(config_for(script)) as server, api_for(server) as api:
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        await api.build(build["id"], "running")
        async with async_playwright() as playwright:
            chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                page = await chromium.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(f"{api.url}/builds/{build['id']}")
                log = page.locator("pre.log")
                first = await log.locator(".line").count()
                await page.wait_for_function(
                    "first => document.querySelectorAll('pre.log .line').length > first + 3",
                    arg=first, timeout=15_000)
                await page.locator("h1 .state.passed").wait_for(timeout=30_000)
                text = await page.locator("pre.log").inner_text()
                assert "step 30" in text and "step 1\n" in text
                assert await page.locator("pre.log .c-green").count() >= 30
                await page.screenshot(path=str(tmp_path / "build.png"), full_page=True)
                assert errors == []
            finally:
                await chromium.close()
    assert (tmp_path / "build.png").stat().st_size > 1000
