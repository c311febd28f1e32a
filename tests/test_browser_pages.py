"""The pages on a phone, in a real browser (Debian's headless Chromium, driven by
Playwright): at 390 px nothing scrolls the page sideways, and what a phone user came for
stays on screen: why a job waits, the Drain button."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.async_api import Page, async_playwright

from tests.support.gitrepo import GitRepo
from tests.support.server import TOKEN, api_for, running_server
from tests.test_browser import CHROMIUM, FLAGS

LONG = "a-branch-name-long-enough-to-push-any-column-past-the-edge-of-a-phone"


async def fits(page: Page, url: str, shots: Path) -> None:
    await page.goto(url)
    width = await page.evaluate("document.documentElement.scrollWidth")
    name = url.split("/", 3)[-1].replace("/", "_").replace("?", "_") or "index"
    await page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    assert width <= 390, f"{url} is {width} px wide at 390 px"


async def test_every_page_fits_a_phone(
    config_for: Callable[..., Path], repo: GitRepo, tmp_path: Path
) -> None:
    repo.git("checkout", "-q", "-b", LONG)
    repo.commit("x" * 300)
    hosts = [{"name": "local", "type": "local", "slots": 1, "workdir": str(tmp_path / "work")}]
    script = "echo " + "y" * 400 + "; if [ -e SLOW ]; then sleep 60; fi"
    async with running_server(config_for(script, hosts=hosts)) as server, api_for(server) as api:
        done = (await api.call("POST", "/api/repos/demo/builds", {"ref": LONG}))[1]
        await api.build(done["id"])
        repo.commit("slow now", {"SLOW": ""})
        running = (await api.call("POST", "/api/repos/demo/builds", {"ref": LONG}))[1]
        await api.build(running["id"], "running")
        queued = (await api.call("POST", "/api/repos/demo/builds", {"ref": LONG}))[1]
        shots = tmp_path / "shots"
        shots.mkdir()
        try:
            await look_at_pages(api.url, [done["id"], running["id"]], shots)
        finally:
            for build in (running, queued):
                await api.call("POST", f"/api/builds/{build['id']}/cancel")


async def look_at_pages(url: str, builds: list[int], shots: Path) -> None:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = await chromium.new_page(viewport={"width": 390, "height": 844})
            await page.goto(f"{url}/login")
            await page.fill("input[name=token]", TOKEN)
            await page.click("form.login button")
            for path in ("/", "/queue", "/hosts", "/repos/demo", "/repos/demo/tests",
                         *(f"/builds/{b}" for b in builds)):
                await fits(page, url + path, shots)
            await page.goto(f"{url}/queue")
            reason = page.locator("td.reason").first
            assert await reason.is_visible()
            assert await reason.inner_text() == "all matching slots busy"
            await page.goto(f"{url}/hosts")
            assert await page.get_by_role("button", name="Drain").is_visible()
            assert await page.get_by_role("columnheader", name="last error").is_visible()
        finally:
            await chromium.close()
