"""A job's log on its build page: lines numbered as in the whole log (also past a cut),
arrival times and section durations from the sidecar, sections, links, per-job paging, the
search, the raw log in full, and the live feed; pure parts alone, the rest through the
real server."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from asyncci.logs import Logs
from asyncci.web.logtext import Line, Section, decide, fold, linkify, split_lines
from asyncci.web.keys import SEARCHES
from asyncci.web.logview import MATCHES, PAGE_LINES, Ask, LogFile, search, window, window_lines
from tests.support.gitrepo import GitRepo
from tests.support.server import Api, api_for, running_server


def lines_of(*texts: str, ms: int | None = None) -> list[Line]:
    return [Line(n, text, ms) for n, text in enumerate(texts, 1)]


def test_lines_keep_a_progress_bars_last_state_and_an_unfinished_last_line() -> None:
    data = b"plain\r\n10%\r50%\r100%\r\n\n\xff bad\nunfinished"
    assert split_lines(data, 7) == [(7, 0, "plain"), (8, 7, "100%"), (9, 21, ""),
                                    (10, 22, "\ufffd bad"), (11, 28, "unfinished")]
    assert split_lines(b"a\n", 1) == [(1, 0, "a")]


def test_sections_fold_and_diffs_do_not() -> None:
    blocks = fold(lines_of("before", "--- build", "cc -c a.c", "+++ :pytest: test", "ok",
                           "::group::lint", "ruff", "::endgroup::", "after",
                           "--- a/setup.py", "+++ b/setup.py", "-old", "~~~ quiet"))
    assert [b.title if isinstance(b, Section) else b.text for b in blocks] == [
        "before", "build", ":pytest: test", "lint", "after", "--- a/setup.py",
        "+++ b/setup.py", "-old", "quiet"]
    build, test, lint = (b for b in blocks if isinstance(b, Section) and b.title != "quiet")
    assert [line.text for line in build.lines] == ["cc -c a.c"] and not build.expanded
    assert test.expanded and lint.ended and [line.number for line in lint.lines] == [7]


def test_which_sections_open_and_how_long_they_took() -> None:
    lines = [Line(1, "--- one", 0), Line(2, "x", 500), Line(3, "--- two", 65_000),
             Line(4, "y", 66_000), Line(5, "--- three", 70_000), Line(6, "z", 71_000)]
    blocks = fold(lines)
    decide(blocks, target=None, last_open=True, end_ms=72_500)
    one, two, three = blocks
    assert isinstance(one, Section) and isinstance(two, Section) and isinstance(three, Section)
    assert (one.duration, two.duration, three.duration) == ("1m 05s", "5.0s", "2.5s")
    assert not one.open and not two.open and three.open  # where a failed job's last line is
    decide(blocks, target=4, last_open=False, end_ms=None)  # a link to line 4; end not shown
    assert two.open and not three.open and three.duration == "≥ 1.0s"


def test_addresses_become_links_and_nothing_else_does() -> None:
    html = ('see <span class="c-blue">https://example.org/a?b=1&amp;c=&quot;2&quot;</span>, '
            "javascript:alert(1) ftp://x http://x.org/y). &lt;b&gt;")
    assert linkify(html) == (
        'see <span class="c-blue"><a href="https://example.org/a?b=1&amp;c=" '
        'rel="nofollow noopener">https://example.org/a?b=1&amp;c=</a>&quot;2&quot;</span>, '
        'javascript:alert(1) ftp://x <a href="http://x.org/y" rel="nofollow noopener">'
        "http://x.org/y</a>). &lt;b&gt;")
    assert linkify("no address") == "no address"


def write_log(tmp_path: Path, max_bytes: int, lines: int) -> tuple[Logs, bytes]:
    """A log of `lines` numbered lines written in random chunks, 10 ms apart."""
    clock = iter(range(0, 10**9, 10))
    logs = Logs(tmp_path, max_bytes, clock=clock.__next__)
    log = logs.open(1)
    stream = b"".join(b"line %d\n" % n for n in range(1, lines + 1))
    rng, at = random.Random(lines), 0
    while at < len(stream):
        size = rng.randint(1, 5000)
        log.write(stream[at:at + size])
        at += size
    log.finish()
    return logs, stream


@pytest.mark.parametrize("max_bytes", [10**8, 200_000])
def test_numbers_are_those_of_the_whole_log_also_past_a_cut(tmp_path: Path,
                                                            max_bytes: int) -> None:
    logs, stream = write_log(tmp_path, max_bytes, 60_000)
    with LogFile(logs, 1) as log:
        assert bool(log.layout.cut) == (max_bytes < len(stream))
        for ask in (Ask(), Ask(start=1), Ask(line=30_000), Ask(before=59_990), Ask(line=60_000)):
            start, end = window(log, ask)
            shown = [line for line in window_lines(log, start, end) if line.number]
            # the tail begins where the cut ended: maybe within a line
            assert shown and all(f"line {line.number}".endswith(line.text) for line in shown)
            assert all(line.text == f"line {line.number}" for line in shown[1:]), ask
            assert all(line.ms is not None for line in shown)
        last = window_lines(log, *window(log, Ask()))
        assert last[-1].number == 60_000 and 0 < len(last) * 9 < 64 * 1024 + 9
        if log.layout.cut:  # a link into the cut shows where the log goes on, after the marker
            start, end = window(log, Ask(line=20_000))
            assert start == log.layout.tail
            middle = window_lines(log, *window(log, Ask(before=window_lines(
                log, start, end)[0].number)))
            assert middle[-1].number == 0 and "bytes cut from the middle" in middle[-1].text
        assert window_lines(log, *window(log, Ask(start=70_000))) == []
    with LogFile(logs, 2) as nothing:  # a job that has not begun: no log, no sidecar
        assert window_lines(nothing, *window(nothing, Ask())) == []
        assert search(nothing, "x").lines == [] and nothing.began is None


def test_a_search_lists_lines_by_their_number_in_the_whole_log(tmp_path: Path) -> None:
    logs, stream = write_log(tmp_path, 200_000, 60_000)
    with LogFile(logs, 1) as log:
        found = search(log, "LINE 5999")
        assert [line.number for line in found.lines] == [5999, 59990, 59991, 59992, 59993,
                                                         59994, 59995, 59996, 59997, 59998,
                                                         59999]  # 59990-… only: the cut
        assert search(log, "ine 1").more and len(search(log, "ine 1").lines) == MATCHES
        assert search(log, "nowhere").lines == []
    clock = iter(range(0, 10**9, 10))
    logs = Logs(tmp_path / "other", 10**6, clock=clock.__next__)
    log = logs.open(2)
    log.write("ÉTÉ İstanbul\nété\nstraße\n".encode())
    log.finish()
    with LogFile(logs, 2) as view:
        assert [line.number for line in search(view, "été").lines] == [1, 2]
        assert [line.text for line in search(view, "STRASSE").lines] == []


SECTIONS = r"""
echo '::group::set up'
echo 'fetching https://example.org/pkg?a=1&b=2 now'
echo '::endgroup::'
echo '--- build'
printf 'progress 10%%\rprogress 50%%\rprogress 100%%\n'
printf '\033[31mred\033[0m <b>not bold</b>\n'
echo '+++ test'
echo 'FAILED tests/test_cart.py'
exit 3
"""


async def page(http: aiohttp.ClientSession, path: str, status: int = 200) -> str:
    async with http.get(path) as r:
        assert r.status == status, (path, r.status, await r.text())
        return await r.text()


async def test_sections_anchors_times_links_and_a_failed_jobs_last_section_open(
    config_for: Callable[..., Path]
) -> None:
    async with running_server(config_for(SECTIONS)) as server, api_for(server) as api:
        build = await run(api)
        job = build["jobs"][0]["id"]
        async with aiohttp.ClientSession(api.url) as http:
            html = await page(http, f"/builds/{build['id']}")
            timed = await page(http, f"/builds/{build['id']}?times=1&wrap=1")
    box = html.split(f'id="log-{job}"', 1)[1]
    sections = re.findall(r'<details class="section" id="j\d+-S(\d+)"[^>]*?( open)?>'
                          r'<summary class="line" id="j\d+-L(\d+)">.*?<span class="title">'
                          r'([^<]*)</span> <span class="dur">([^<]*)</span>', box)
    assert [(title, bool(is_open)) for _, is_open, _, title, _ in sections] == [
        ("set up", False), ("build", False), ("test", True)]
    assert all(s == n and re.fullmatch(r"\d+\.\ds", dur) for s, _, n, _, dur in sections)
    assert f'<a class="n" href="#j{job}-L2">2</a>' in box  # every line numbered and linkable
    assert ('<a href="https://example.org/pkg?a=1&amp;b=2" rel="nofollow noopener">'
            "https://example.org/pkg?a=1&amp;b=2</a> now") in box
    assert "progress 100%" in box and "progress 10%" not in box
    assert '<span class="c-red">red</span> &lt;b&gt;not bold&lt;/b&gt;' in box
    assert re.search(r'<span class="t">0:0\d</span>', box) and "data-end" in box
    assert 'class="logbox times wrap"' in timed and 'class="logbox"' in html


async def run(api: Api, ref: str = "main") -> Any:
    status, build = await api.call("POST", "/api/repos/demo/builds", {"ref": ref})
    assert status == 201, build
    return await api.build(build["id"], timeout=60)


TWO_JOBS = '''
[[jobs]]
name = "one"
script = "seq -f 'line %g' 1 20000"

[[jobs]]
name = "two"
script = "seq -f 'other %g' 1 20000"
'''


async def test_paging_one_jobs_log_leaves_the_others_at_their_end_and_search_links_lines(
    config_for: Callable[..., Path], repo: GitRepo
) -> None:
    repo.commit("two jobs", {".asyncci.toml": TWO_JOBS})
    async with running_server(config_for("")) as server, api_for(server) as api:
        build = await run(api)
        one, two = (j["id"] for j in build["jobs"])
        path = f"/builds/{build['id']}"
        async with aiohttp.ClientSession(api.url) as http:
            end = await page(http, path)
            first = await page(http, f"{path}?job={one}&start=1")
            later = await page(http, f"{path}?job={one}&start=1000")
            around = await page(http, f"{path}?job={one}&line=12345")
            found = await page(http, f"{path}?job={one}&q=LINE+1999")
            for bad in (f"?job={one}&line=0", f"?job={one}&start=x", "?job=x", "?q=line",
                        f"?job={one}&before=-1", f"?job={one}&q=" + "x" * 201):
                assert "error" in (await page(http, path + bad, 400)).lower()
            assert f'id="j{two}-L1"' in await page(http, f"{path}?job={two}&before=500")
            searches = server.app[SEARCHES]
            async with searches, searches:  # two searches already read whole logs
                busy = await page(http, f"{path}?job={one}&q=line", 503)
            assert "Too many log searches" in busy
    for html, shown, other in ((end, 20000, 20000), (first, 1, 20000), (later, 1000, 20000),
                               (around, 12340, 20000)):
        assert f'id="j{one}-L{shown}"' in html and f'id="j{two}-L{other}"' in html
    # The page's lines are shared out between the jobs, but for the one the address names.
    assert end.count(f'id="j{one}-L') == end.count(f'id="j{two}-L') == PAGE_LINES // 2
    assert first.count(f'id="j{one}-L') == PAGE_LINES
    assert f'id="j{one}-L1"' not in end and f'id="j{two}-L1"' not in first
    links = dict(re.findall(r'<a href="\?([^"]*)">(Start|Earlier|Later|End)</a>',
                            first.split(f'id="log-{one}"')[1].split("</form>")[0]))
    assert set(links.values()) == {"Later", "End"}
    # line 1 is asyncci's note of the attempt: "line N" is line N + 1
    assert f'?q=LINE+1999&amp;job={one}&amp;line=2000#j{one}-L2000">2000</a>line 1999' in found
    hits = re.findall(r'<li class="line"><a class="n" href="[^"]*">(\d+)</a>', found)
    assert hits == ["2000", *map(str, range(19991, 20001))]
    assert "11 lines hold “LINE 1999”" in found


async def test_the_raw_log_is_the_whole_log(config_for: Callable[..., Path]) -> None:
    script = "seq -f 'raw line %g' 1 300000"
    async with running_server(config_for(script)) as server, api_for(server) as api:
        job = (await run(api))["jobs"][0]["id"]
        async with aiohttp.ClientSession(api.url) as http:
            async with http.get(f"/api/jobs/{job}/log") as r:
                whole = await r.read()
                assert r.headers["X-Log-Complete"] == "1"
                assert int(r.headers["X-Log-Offset"]) == len(whole) > 3 << 20
            async with http.get(f"/api/jobs/{job}/log?offset={len(whole) - 10}") as r:
                assert await r.read() == whole[-10:] == b"ne 300000\n"
            async with http.get(f"/api/jobs/{job}/log?offset={len(whole) + 5}") as r:
                assert await r.read() == b"" and r.headers["X-Log-Offset"] == str(len(whole) + 5)
            async with http.head(f"/api/jobs/{job}/log") as r:
                assert r.status == 200 and r.headers["Content-Length"] == str(len(whole))
    assert whole.count(b"\n") == 300001 and b"raw line 1\n" in whole


async def test_the_feed_sends_what_running_logs_gained_then_says_done(
    config_for: Callable[..., Path]
) -> None:
    script = "printf 'a\\rb\\n'; for i in 1 2 3; do echo step $i; sleep 0.3; done"
    async with running_server(config_for(script)) as server, api_for(server) as api:
        status, build = await api.call("POST", "/api/repos/demo/builds", {})
        job = (await api.build(build["id"], "running"))["jobs"][0]["id"]
        text, offset, done, polls = "", 0, False, 0
        while not done:
            answer = (await api.get(f"/api/logs?jobs={job}:{offset}"))["jobs"][str(job)]
            text, offset, done = text + answer["text"], answer["offset"], answer["done"]
            polls += 1
            assert polls < 100
        for bad, status in (("x", 400), (f"{job}", 400), ("", 400), ("999:0", 404)):
            assert (await api.call("GET", f"/api/logs?jobs={bad}"))[0] == status
        raw = (await api.call("GET", f"/api/jobs/{job}/log"))[1]
    assert text.encode() == raw and "a\rb\nstep 1\nstep 2\nstep 3\n" in text
    assert polls < 20  # each answer waited for news, none was empty for nothing


async def test_a_reader_far_behind_or_past_a_cut_skips_to_the_end_with_its_number(
    config_for: Callable[..., Path]
) -> None:
    async with running_server(config_for("seq 1 1000000")) as server, api_for(server) as api:
        job = (await run(api))["jobs"][0]["id"]
        raw = (await api.call("GET", f"/api/jobs/{job}/log"))[1]
        for offset in (0, len(raw) + 100):
            news = (await api.get(f"/api/logs?jobs={job}:{offset}"))["jobs"][str(job)]
            number = news["skipped_to_line"]
            # line 1 is asyncci's note of the attempt: line N says N - 1
            assert news["text"].startswith(f"{number - 1}\n") and news["text"] in raw.decode()
            assert raw[:news["offset"] - len(news["text"])].count(b"\n") == number - 1
            assert len(raw) - len(news["text"]) > 4 << 20 and news["done"]  # all sent: it ended
