"""Hostile and careless clients of the real server: forged cookies, absurd offsets, deep
JSON, monstrous refs, readers that leave, unsigned floods, slow headers, copied cookies,
token guessing, and credentials that must never be shown. Each is answered 4xx (or ended
quietly) and changes nothing; no test here may leave a traceback in the server's log."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncci.model import redact_url
from asyncci.web import app as web_app
from asyncci.web.params import target_problem
from asyncci.web.auth import COOKIE
from asyncci.web.throttle import Throttle
from tests.support.github import fake_github, signed
from tests.support.gitrepo import GitRepo
from tests.support.server import TOKEN, Api, api_for, running_server
from tests.support.wait import until

SECRET = "webhook-secret-for-tests"
NESTED = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever a test sends, the server logs no traceback and no 500."""
    yield
    bad = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()
           or r.name.startswith(("aiohttp", "asyncci.web")) and r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


def private(config: Path) -> Path:
    config.write_text(config.read_text().replace("[web]\n", "[web]\npublic = false\n"))
    return config


@asynccontextmanager
async def with_webhooks(config: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Path]:
    """`config` with a [github] section: its webhook secret, a stand-in for its API."""
    monkeypatch.setenv("ASYNCCI_WEBHOOK_SECRET", SECRET)
    async with fake_github() as github:
        config.write_text(config.read_text() + f'\n[github]\napi_url = "{github.url}"\n')
        yield config


@asynccontextmanager
async def serving(config: Path) -> AsyncIterator[Api]:
    async with running_server(config) as server, api_for(server) as api:
        yield api


async def fetch(url: str, method: str = "GET", **kw: Any) -> tuple[int, dict[str, str], bytes]:
    """One request without the token or any cookie jar: (status, headers, body)."""
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url, allow_redirects=False, **kw) as r:
            return r.status, dict(r.headers), await r.read()


async def raw(api: Api, head: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare TCP connection to the server that has sent `head` and nothing more."""
    host, port = api.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


# -- 1, 9: sessions ---------------------------------------------------------------------

async def login(api: Api) -> str:
    """Log in as a browser would; the session cookie's value."""
    status, headers, _ = await fetch(api.url + "/login", "POST", data={"token": TOKEN})
    assert status == 303
    match = re.search(rf"{COOKIE}=([^;]+)", headers["Set-Cookie"])
    assert match
    return match[1]


async def reads(api: Api, cookie: str) -> tuple[int, int]:
    """What a client holding only `cookie` gets for / and /api/builds."""
    sent = {"Cookie": f"{COOKIE}={cookie}"}
    return ((await fetch(api.url + "/", headers=sent))[0],
            (await fetch(api.url + "/api/builds", headers=sent))[0])


async def logout(api: Api, cookie: str) -> None:
    sent = {"Cookie": f"{COOKIE}={cookie}"}
    page = (await fetch(api.url + "/hosts", headers=sent))[2].decode()
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert csrf
    status, _, _ = await fetch(api.url + "/logout", "POST", headers=sent, data={"csrf": csrf[1]})
    assert status == 303


async def test_a_forged_session_cookie_is_no_session(config_for: Callable[..., Path]) -> None:
    async with serving(private(config_for())) as api:
        for forged in ("².abc", "9" * 5000 + ".ff", "¹²³", "x" * 4000, "%00", "."):
            assert await reads(api, forged) == (303, 401), forged[:10]
            status, _, _ = await fetch(api.url + "/logout", "POST", data={"csrf": "x"},
                                       headers={"Cookie": f"{COOKIE}={forged}"})
            assert status == 401


async def test_logout_ends_the_session_and_a_restart_does_not(
    config_for: Callable[..., Path]
) -> None:
    config = private(config_for())
    async with running_server(config) as server, api_for(server) as api:
        kept = await login(api)
        assert await reads(api, kept) == (200, 200)
        stored = await server.store.live_sessions()
        assert len(stored) == 1 and kept not in stored  # only a keyed hash is stored
    async with serving(config) as api:
        assert await reads(api, kept) == (200, 200)  # the restart logged nobody out
        copied = await login(api)
        status, _, _ = await fetch(api.url + "/logout", "POST", data={"csrf": "é"},
                                   headers={"Cookie": f"{COOKIE}={copied}"})
        assert status == 403  # a forged form, in a script compare_digest() refuses
        await logout(api, copied)
        assert await reads(api, copied) == (303, 401)  # a copy taken before is worthless
        assert await reads(api, kept) == (200, 200)  # other sessions live on
    async with serving(config) as api:
        assert await reads(api, copied) == (303, 401)  # and stays so after a restart


async def test_a_new_token_ends_every_session(config_for: Callable[..., Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    config = private(config_for())
    async with serving(config) as api:
        cookie = await login(api)
    monkeypatch.setenv("ASYNCCI_OTHER_TOKEN", "another-token-9876543210")
    config.write_text(config.read_text().replace('"ASYNCCI_TEST_TOKEN"', '"ASYNCCI_OTHER_TOKEN"'))
    async with serving(config) as api:
        assert await reads(api, cookie) == (303, 401)


# -- 10: token guessing -----------------------------------------------------------------

async def test_wrong_tokens_are_throttled_per_address(config_for: Callable[..., Path]) -> None:
    async with serving(config_for()) as api:
        for _ in range(Throttle().failures):
            status, _, _ = await fetch(api.url + "/login", "POST", data={"token": "guess"})
            assert status == 401
        for token in ("guess", TOKEN):  # the right token too: else the pause is no brake
            status, headers, page = await fetch(api.url + "/login", "POST", data={"token": token})
            assert status == 429 and b"Too many wrong tokens" in page
            assert 0 < int(headers["Retry-After"]) <= 60
        status, answer = await api.call("GET", "/api/builds")  # the right bearer token
        assert status == 429 and "too many wrong tokens" in answer["error"]


async def test_bearer_token_guesses_count_too(config_for: Callable[..., Path]) -> None:
    async with serving(config_for()) as api:
        url = api.url + "/api/repos/demo/builds"
        for _ in range(Throttle().failures):
            assert (await fetch(url, "POST", headers={"Authorization": "Bearer guess"}))[0] == 401
        status, headers, _ = await fetch(url, "POST", headers={"Authorization": "Bearer guess"})
        assert status == 429 and "Retry-After" in headers
        assert (await fetch(api.url + "/api/builds"))[0] == 200  # reading without a token


def test_the_throttle_forgets_after_its_window_and_stays_small() -> None:
    now = [0.0]
    throttle = Throttle(failures=3, window_s=60, addresses=100, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("a") == 0
        assert not throttle.attempted("a", False)
    assert throttle.retry_after("a") == 60 and throttle.retry_after("b") == 0
    now[0] = 59.5
    assert throttle.retry_after("a") == 0.5
    now[0] = 60.0
    assert throttle.retry_after("a") == 0  # the window passed
    throttle.attempted("b", False)
    throttle.attempted("b", True)
    throttle.attempted("b", False)
    assert throttle.retry_after("b") == 0  # a right token wiped the earlier failures
    for i in range(1000):
        throttle.attempted(f"10.0.{i // 256}.{i % 256}", False)
    assert len(throttle._seen) == 100


# -- 2: offsets -------------------------------------------------------------------------

async def test_log_offsets_out_of_range_are_400(config_for: Callable[..., Path]) -> None:
    async with serving(config_for()) as api:
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        job = (await api.build(build["id"]))["jobs"][0]["id"]
        log, stream = f"/api/jobs/{job}/log", f"/api/jobs/{job}/log/stream"
        for bad in ("-5", "1" * 30, "²", "9" * 5000, "1_0", " 7", "0x10"):
            for path in (log, stream):
                status, answer = await api.call("GET", f"{path}?offset={quote(bad)}")
                assert status == 400 and "offset must be an integer" in answer["error"], bad
            if bad.isascii() and bad.strip() == bad:  # aiohttp strips a header's spaces
                status, answer = await api.call("GET", stream, headers={"Last-Event-ID": bad})
                assert status == 400 and "offset must be an integer" in answer["error"], bad
        full = await api.get(log)
        assert await api.get(f"{log}?offset=3") == full[3:] and len(full) > 3


# -- 3, 4: bodies and refs --------------------------------------------------------------

async def test_json_nested_too_deep_is_not_json(config_for: Callable[..., Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    async with with_webhooks(config_for(), monkeypatch) as config:
        async with serving(config) as api:
            status, answer = await api.call("POST", "/api/repos/demo/builds", data=NESTED,
                                            headers={"Content-Type": "application/json"})
            assert status == 400 and "JSON" in answer["error"]
            status, _, body = await fetch(api.url + "/hooks/github", "POST", data=NESTED,
                                          headers=signed(NESTED, SECRET, "push", "d-1"))
            assert status == 400 and b"not JSON" in body
            assert (await api.get("/api/builds"))["builds"] == []


async def test_a_ref_git_would_choke_on_is_refused_before_any_git(
    config_for: Callable[..., Path]
) -> None:
    async with running_server(config_for()) as server, api_for(server) as api:
        refs = ["x" * 100_000, "a\x00b", "a\nb", "-x", "a..b", "a b", "x.lock", "@", "a/",
                "\udc80", "refs/heads/.hidden", "a@{1}", "a~1", "a:b", "\u200b"]
        for body in [{"ref": r} for r in refs] + [{"sha": s} for s in ("g" * 40, "a" * 100_000)]:
            started = time.monotonic()
            status, answer = await api.call("POST", "/api/repos/demo/builds", body)
            assert status == 422 and answer["error"].startswith("not a"), body
            assert len(answer["error"]) < 200 and time.monotonic() - started < 5
        assert not (server.config.server.data_dir / "mirrors" / "demo.git").exists()  # no git ran
        status, answer = await api.call("POST", "/api/repos/demo/builds", {"ref": "feature/x-1"})
        assert status == 422 and answer["error"].startswith("unknown ref")  # git said so
        assert (await api.get("/api/builds"))["builds"] == []


def test_good_ref_names_pass() -> None:
    for ref in ("main", "refs/heads/feature/x-1", "refs/pull/12/head", "release-1.0", "ünï",
                "v1.2.3", "user@host"):
        assert target_problem(ref, None) is None, ref
    assert target_problem(None, "0123abcd" * 5) is None


# -- 5: readers that leave --------------------------------------------------------------

async def test_a_reader_leaving_a_live_log_is_no_error(
    config_for: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncci.web.streams")
    script = 'for i in $(seq 1 1000); do echo "line $i"; sleep 0.02; done'
    async with serving(config_for(script)) as api:
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        async with aiohttp.ClientSession() as http:
            async with http.get(api.url + f"/api/jobs/{build['jobs'][0]['id']}/log/stream") as r:
                assert b"event: log" in await r.content.readuntil(b"\n\n")
        await until(lambda: "the reader went away" in caplog.text, 20, "the stream to notice")
        assert (await api.get(f"/api/builds/{build['id']}"))["state"] == "running"
        await api.call("POST", f"/api/builds/{build['id']}/cancel")
        await api.build(build["id"])


async def test_a_reader_leaving_a_download_is_no_error(
    config_for: Callable[..., Path], repo: GitRepo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncci.web.streams")
    # Bigger than what the sockets between server and client can hold.
    pipeline = ('[[jobs]]\nname = "big"\nscript = "truncate -s 32M big.bin"\n'
                'artifacts = ["big.bin"]\n')
    repo.commit("a big artifact", {".asyncci.toml": pipeline})
    async with serving(config_for()) as api:
        build = (await api.call("POST", "/api/repos/demo/builds", {}))[1]
        done = await api.build(build["id"], timeout=60)
        artifacts = (await api.get(f"/api/jobs/{done['jobs'][0]['id']}/artifacts"))["artifacts"]
        assert [a["size"] for a in artifacts] == [32 << 20]
        async with aiohttp.ClientSession() as http:
            async with http.get(api.url + artifacts[0]["url"]) as r:
                assert len(await r.content.readexactly(1024)) == 1024
        await until(lambda: "artifact 'big.bin'" in caplog.text, 20, "the download to notice")


# -- 7: webhooks refused before their body ----------------------------------------------

async def test_an_unsigned_or_oversized_webhook_is_refused_before_its_body(
    config_for: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with with_webhooks(config_for(), monkeypatch) as config:
        async with serving(config) as api:
            for signature, length, status in (("", 20_000_000, 401),
                                              ("sha256=" + "g" * 64, 20_000_000, 401),
                                              ("sha256=" + "0" * 63, 20_000_000, 401),
                                              ("sha256=" + "0" * 64, 26 * 1024 * 1024, 413)):
                head = (f"POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
                        f"Content-Type: application/json\r\nX-GitHub-Event: push\r\n"
                        f"X-Hub-Signature-256: {signature}\r\n\r\n")
                reader, writer = await raw(api, head)  # the body is never sent
                line = await asyncio.wait_for(reader.readline(), 5)
                writer.close()
                assert line.startswith(f"HTTP/1.1 {status} ".encode()), (signature, line)
            started = time.monotonic()
            status, _, body = await fetch(api.url + "/hooks/github", "POST",
                                          data=io.BytesIO(b" " * 20_000_000),
                                          headers={"Content-Type": "application/json"})
            assert status == 401 and b"X-Hub-Signature-256" in body
            assert time.monotonic() - started < 10


# -- 8: slow and idle connections -------------------------------------------------------

async def test_slow_headers_and_idle_connections_are_closed(
    config_for: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_app, "IDLE_TIMEOUT_S", 0.5)
    async with serving(config_for()) as api:
        for head in ("GET /healthz HTTP/1.1\r\nHost: x\r\n",  # headers never finished
                     "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"):  # answered, then idle
            reader, writer = await raw(api, head)
            started = time.monotonic()
            rest = await asyncio.wait_for(reader.read(), 5)  # until the server closes
            writer.close()
            assert time.monotonic() - started < 3
            assert (b"200 OK" in rest) == head.endswith("\r\n\r\n"), rest


# -- 11: what a page shows --------------------------------------------------------------

async def test_a_private_login_page_names_no_repo(config_for: Callable[..., Path]) -> None:
    async with serving(private(config_for())) as api:
        status, _, page = await fetch(api.url + "/login")
        assert status == 200 and b"Log in" in page and b"/repos/demo" not in page
        cookie = await login(api)
        page = (await fetch(api.url + "/login", headers={"Cookie": f"{COOKIE}={cookie}"}))[2]
        assert b'href="/repos/demo"' in page  # once logged in, the menu is back


async def test_credentials_in_a_repo_url_are_never_shown(
    config_for: Callable[..., Path]
) -> None:
    config = config_for()
    text = re.sub(r'url = "[^"]*"', 'url = "https://bot:s3cr3t@127.0.0.1:9/x.git"',
                  config.read_text())
    config.write_text(text)
    async with running_server(config) as server, api_for(server) as api:
        repo = server.config.repo("demo")
        assert repo is not None
        await server.planner.record_poll(
            repo, None, "fatal: unable to access 'https://bot:s3cr3t@127.0.0.1:9/x.git/'")
        status, _, page = await fetch(api.url + "/repos/demo")
        assert status == 200 and b"https://***@127.0.0.1:9/x.git" in page
        answers = [page, json.dumps(await api.get("/api/repos")).encode(),
                   json.dumps(await api.get("/api/repos/demo")).encode()]
        assert b"***@" in answers[-1]
        assert not [a for a in answers if b"s3cr3t" in a]


def test_redact_url() -> None:
    assert redact_url("https://bot:T0K@host/x.git") == "https://***@host/x.git"
    assert redact_url("ssh://git@host:22/x") == "ssh://***@host:22/x"
    assert (redact_url("see 'https://a:b@c@h/x' and http://u@h")
            == "see 'https://***@h/x' and http://***@h")
    for unchanged in ("https://host/x.git?a=b@c", "git@github.com:o/x.git", "/srv/x.git"):
        assert redact_url(unchanged) == unchanged


# -- 6: fuzz ----------------------------------------------------------------------------

def send(url: str, method: str = "GET", body: bytes | None = None) -> int:
    """A blocking request with the token, for hypothesis in a thread beside the server."""
    request = urllib.request.Request(url, data=body, method=method, headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


def segment(text: str) -> str:
    """`text` as one path segment, lone surrogates and all."""
    return quote(text, safe="", errors="surrogatepass")


TRICKY = st.sampled_from(["main", "\udc80", "\x00", "²", "-x", "9" * 5000, "a" * 2000, ""])
SCALAR = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | TRICKY
JSON_VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
TARGET = st.text(max_size=30) | TRICKY | JSON_VALUE
BODY = (st.fixed_dictionaries({}, optional={"ref": TARGET, "sha": TARGET}).map(
    lambda body: json.dumps(body).encode())
    | JSON_VALUE.map(lambda value: json.dumps(value).encode()) | st.binary(max_size=50))
QUERY = st.text(max_size=12) | TRICKY | st.integers().map(str)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def ids(known: int) -> st.SearchStrategy[str]:
    """Path ids: one that exists, others, and what int() mistakes for one."""
    tricky = [str(known), "0", "-1", "²", "1" * 30, "1_0", " 1"]
    return st.sampled_from(tricky) | st.text(max_size=8)


async def queued_build(api: Api) -> Any:
    """A build that stays queued (its host drains), for the fuzzing to aim at."""
    await api.call("POST", "/api/hosts/local/drain")
    return (await api.call("POST", "/api/repos/demo/builds", {}))[1]


async def test_fuzzed_bodies_never_get_a_5xx(config_for: Callable[..., Path]) -> None:
    async with serving(config_for()) as api:
        known = (await queued_build(api))["id"]

        @FUZZ
        @given(body=BODY, build_id=ids(known),
               action=st.sampled_from([None, None, None, "cancel", "rebuild", "approve"]))
        def fuzz(body: bytes, build_id: str, action: str | None) -> None:
            path = (f"/api/builds/{segment(build_id)}/{action}" if action
                    else "/api/repos/demo/builds")
            status = send(api.url + path, "POST", body)
            assert status < 500, (path, body[:200], status)

        await asyncio.to_thread(fuzz)


async def test_fuzzed_queries_never_get_a_5xx(config_for: Callable[..., Path]) -> None:
    async with serving(config_for()) as api:
        known = (await queued_build(api))["jobs"][0]["id"]

        @FUZZ
        @given(path=st.sampled_from(["/api/builds", "/api/jobs/{}/log", "/api/queue"]),
               job_id=ids(known),
               query=st.dictionaries(
                   st.sampled_from(["repo", "state", "ref", "limit", "before", "offset"]), QUERY))
        def fuzz(path: str, job_id: str, query: dict[str, str]) -> None:
            url = api.url + path.format(segment(job_id)) + "?" + urlencode(
                {k: v.encode(errors="surrogatepass") for k, v in query.items()})
            status = send(url)
            assert status < 500, (url[:300], status)

        await asyncio.to_thread(fuzz)


def test_an_ipv6_client_is_counted_by_its_64() -> None:
    throttle = Throttle(failures=2)
    for n in range(2):
        throttle.attempted(f"2001:db8:1:2::{n + 1}", False)
    assert throttle.retry_after("2001:db8:1:2:ffff::9") > 0
    assert throttle.retry_after("2001:db8:1:3::1") == 0
    assert throttle.retry_after("192.0.2.1") == 0


async def test_a_forms_body_is_small_and_its_encoding_no_crash(
    config_for: Callable[..., Path]
) -> None:
    """Anyone may post to /login: a big body, declared or not, is refused (413), and a
    body whose content type cannot be parsed is a 400, never a 500."""
    async with serving(config_for()) as api:
        url = api.url + "/login"
        big = {"token": "x" * 100_000}
        assert (await fetch(url, "POST", data=big))[0] == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"token=" + b"x" * 10_000

        assert (await fetch(url, "POST", data=chunks(),
                            headers={"Content-Type": "application/x-www-form-urlencoded"}))[0] == 413
        for content_type in ("multipart/form-data", "application/x-www-form-urlencoded;"
                             " charset=latin-9"):
            status, _, _ = await fetch(url, "POST", data=b"token=x",
                                       headers={"Content-Type": content_type})
            assert status == 400, content_type
        status, _, _ = await fetch(api.url + "/api/repos/demo/builds", "POST", data=b"{}",
                                   headers={"Content-Type": "application/json; charset=x-nope",
                                            "Authorization": f"Bearer {TOKEN}"})
        assert status == 400


async def test_an_unknown_page_is_a_page_and_an_unknown_api_path_json(
    config_for: Callable[..., Path]
) -> None:
    async with serving(config_for()) as api:
        status, headers, body = await fetch(api.url + "/no/such/page")
        assert status == 404 and headers["Content-Type"].startswith("text/html")
        assert b"<main" in body
        status, headers, _ = await fetch(api.url + "/api/builds/9999")
        assert status == 404 and headers["Content-Type"].startswith("application/json")
