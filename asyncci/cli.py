"""`asyncci serve | check | trigger | status`: parse, then call. Exit statuses: 0 ok,
1 a failure the command reports (a host down, a refused request, a build that did not
pass), 2 bad config or usage, 130 interrupted. `trigger` and `status` are clients of a
running server's HTTP API and need no config file; this module is the only such client."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import textwrap
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from .config import Config, load_config
from .config.checks import ConfigError

DEFAULT_URL = "http://127.0.0.1:8080"  # the default `server.listen`
POLL_S = 0.5  # how often a quiet build is asked for news while following it
QUEUE_SHOWN = 20
ENVIRONMENT = """\
environment:
  ASYNCCI_CONFIG  the config file when -c is not given (else ./asyncci.toml)
  ASYNCCI_TOKEN   the bearer token `trigger` sends: the one the server's web.token_env
                  names (never on the command line, where `ps` would show it)

exit status: 0 ok; 1 a host or repo check failed, the server refused or could not be
reached, or the build waited for did not pass; 2 a bad config or usage; 130 interrupted.
"""


class ApiError(Exception):
    """The server could not be reached, or refused: the message is what the user reads."""


def config_path(given: str | None) -> Path:
    return Path(given or os.environ.get("ASYNCCI_CONFIG") or "asyncci.toml")


def load_or_exit(given: str | None) -> Config:
    from .server import validate

    try:
        config = load_config(config_path(given))
        errors = validate(config)
    except ConfigError as e:
        errors = e.errors
    for line in errors:
        print(line, file=sys.stderr)
    if errors:
        raise SystemExit(2)
    return config


def server_url(url: str | None, config: str | None) -> str:
    """`--url`, else the config's `public_url`, else the default address: a client needs
    no config file, but a config named with -c must exist, and a broken one is an error."""
    if url:
        return url.rstrip("/")
    if config is None and not config_path(None).exists():
        return DEFAULT_URL
    return load_or_exit(config).server.public_url


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="asyncci", description=textwrap.fill(
            "A continuous-integration server in one process. `serve` and `check` read the"
            " config; `trigger` and `status` talk to a running server over HTTP. See"
            " `asyncci COMMAND --help`."),
        epilog=ENVIRONMENT, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=textwrap.fill(description),
                                   epilog=ENVIRONMENT,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)

    serve = command("serve", "run the server", "Run the scheduler, the hosts' connections, the"
                    " triggers and the web UI in one process, until SIGTERM or SIGINT (running"
                    " jobs go on and are reattached at the next start).")
    check = command("check", "check the config, every host and every repo", "Validate the"
                    " config, connect to every host and print its git and bash versions, slots"
                    " and labels, run `git ls-remote` on every repo, and name the repos whose"
                    " labels no host has; exit 1 on any problem.")
    for sub in (serve, check):
        sub.add_argument("-c", "--config", metavar="CONFIG",
                         help="the config file (default: $ASYNCCI_CONFIG, else ./asyncci.toml)")

    trigger = command("trigger", "ask a running server for a build", "Ask a running server"
                      " to build REPO (a new build, even of a commit built before); with"
                      " --wait, follow its log and exit 0 if it passed, 1 if it did not.")
    trigger.add_argument("repo", metavar="REPO", help="the repo's name in the config")
    which = trigger.add_mutually_exclusive_group()
    which.add_argument("--ref", help="build the head of this branch or ref (default: the"
                       " repo's default branch)")
    which.add_argument("--sha", help="build this commit")
    trigger.add_argument("--wait", action="store_true", help="follow the build's log until it"
                         " ends (Ctrl-C stops following; the build goes on)")
    status = command("status", "show hosts, running jobs, the queue and recent builds",
                     "Show a running server's hosts, running jobs, queue and recent builds.")
    for sub in (trigger, status):
        sub.add_argument("--url", help=f"the server (default: the config's server.public_url"
                         f" if there is a config file, else {DEFAULT_URL})")
        sub.add_argument("-c", "--config", metavar="CONFIG",
                         help="where to find server.public_url (default: $ASYNCCI_CONFIG,"
                         " else ./asyncci.toml, if it exists)")
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.command == "serve":
        config = load_or_exit(args.config)
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("asyncssh").setLevel(logging.WARNING)  # a line per channel
        from .server import serve

        asyncio.run(serve(config))
    elif args.command == "check":
        config = load_or_exit(args.config)
        print(f"{config.path}: ok; {len(config.hosts)} host(s), {len(config.repos)} repo(s)")
        from .server import check

        findings = asyncio.run(check(config))
        for finding in findings:
            print(finding.line)
        raise SystemExit(0 if all(f.ok for f in findings) else 1)
    else:
        url = server_url(args.url, args.config)
        runner = _trigger(url, args) if args.command == "trigger" else _status(url)
        try:
            raise SystemExit(asyncio.run(runner))
        except ApiError as e:
            print(f"asyncci: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            raise SystemExit(130) from None


class Client:
    """A running server's API over one HTTP session, with $ASYNCCI_TOKEN when it is set."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self._session = session
        token = os.environ.get("ASYNCCI_TOKEN")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        """The answer's JSON object; ApiError for any other status than `expect`, or an
        answer that is no JSON object (a proxy's error page)."""
        response, raw = await self._fetch(method, path, body)
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = raw.decode(errors="replace")[:200]
        if response.status != expect or not isinstance(answer, dict):
            error = answer.get("error", answer) if isinstance(answer, dict) else answer
            raise ApiError(f"{response.status}: {error}")
        return answer

    async def log(self, job_id: int, offset: int) -> tuple[bytes, bool]:
        """A job's log from `offset`, and whether it is all there (the job ended)."""
        response, data = await self._fetch("GET", f"/api/jobs/{job_id}/log?offset={offset}")
        if response.status != 200:
            raise ApiError(f"{response.status}: the log of job {job_id}")
        return data, response.headers.get("X-Log-Complete") == "1"

    async def _fetch(self, method: str, path: str, body: Any = None
                     ) -> tuple[aiohttp.ClientResponse, bytes]:
        try:
            async with self._session.request(method, self.url + path, json=body,
                                             headers=self._headers) as response:
                return response, await response.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ApiError(f"cannot reach {self.url}: {e or type(e).__name__}") from None


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60, sock_connect=10))


async def _trigger(url: str, args: argparse.Namespace) -> int:
    body = {"ref": args.ref} if args.ref else {"sha": args.sha} if args.sha else {}
    async with _session() as session:
        client = Client(url, session)
        build = await client.call("POST", f"/api/repos/{args.repo}/builds", body, expect=201)
        print(f"build {build['id']} {build['state']} {build['repo']} {build['ref']}"
              f" {build['sha'][:12]}  {build['url']}", flush=True)
        return await follow(client, build) if args.wait else 0


@dataclass
class _Followed:
    """Where the terminal is in one job's log."""

    name: str
    offset: int = 0
    partial: bytes = b""  # the start of a line whose end has not come yet
    done: bool = False


async def follow(client: Client, build: dict[str, Any]) -> int:
    """Print every job's log as it grows (each line prefixed by its job's name when there
    are several), then how each job and the build ended; 0 if the build passed. Stopping
    (Ctrl-C) or losing the server leaves the build as it is."""
    followed: dict[int, _Followed] = {}
    try:
        while True:
            for job in build["jobs"]:
                followed.setdefault(job["id"], _Followed(job["name"]))
            if build["finished_at"] is not None and all(f.done for f in followed.values()):
                break
            width = max(len(f.name) for f in followed.values()) if len(followed) > 1 else 0
            grew = False
            for job in build["jobs"]:
                f = followed[job["id"]]
                if f.done or job["state"] == "queued":
                    continue
                data, complete = await client.log(job["id"], f.offset)
                f.offset += len(data)
                grew |= bool(data)
                lines, f.partial = log_lines(f.partial, data, complete)
                print("".join(f"{f.name:<{width}} | {line}\n" if width else f"{line}\n"
                              for line in lines), end="")
                if complete:
                    f.done = True
                    print(ending(await client.call("GET", f"/api/jobs/{job['id']}")))
            sys.stdout.flush()
            if not grew:
                await asyncio.sleep(POLL_S)
            build = await client.call("GET", f"/api/builds/{build['id']}")
    except asyncio.CancelledError:
        print(f"\nasyncci: stopped following; build {build['id']} goes on: {build['url']}",
              file=sys.stderr)
        raise
    except ApiError as e:
        raise ApiError(f"{e} (while following build {build['id']}, {build['url']})") from None
    error = f": {build['error']}" if build["error"] else ""
    print(f"build {build['id']} {build['state']}{error}  {build['url']}")
    return 0 if build["state"] == "passed" else 1


def log_lines(partial: bytes, data: bytes, final: bool) -> tuple[list[str], bytes]:
    """The complete lines that `partial + data` holds (all of it when `final`) and what is
    left of an unfinished line. A line that `\\r` redraws (a progress bar) is shown as it
    ended: its earlier states would each be a line, and a prefix would be overwritten."""
    *lines, rest = (partial + data).split(b"\n")
    if final and rest:
        lines, rest = [*lines, rest], b""
    return [line.decode(errors="replace").rstrip("\r").rpartition("\r")[2]
            for line in lines], rest


def ending(job: dict[str, Any]) -> str:
    """`job test (python=3.12): failed after 12s on b1: exit code 1`."""
    took = ""
    if job["started_at"] and job["finished_at"]:
        seconds = (datetime.fromisoformat(job["finished_at"])
                   - datetime.fromisoformat(job["started_at"])).total_seconds()
        whole = int(seconds)
        shown = f"{whole // 60}m {whole % 60:02d}s" if whole >= 60 else f"{seconds:.1f}s"
        took = f" after {shown} on {job['host']}"
    why = f": {job['reason']}" if job["reason"] else ""
    return f"job {job['name']}: {job['state']}{took}{why}"


async def _status(url: str) -> int:
    async with _session() as session:
        client = Client(url, session)
        hosts, running, queue, recent = await asyncio.gather(*(
            client.call("GET", f"/api/{what}") for what in
            ("hosts", "builds?state=running", f"queue?limit={QUEUE_SHOWN}", "builds?limit=10")))
    print(f"asyncci at {url}\nHOSTS")
    for h in hosts["hosts"]:
        error = f"  {h['last_error']}" if h["last_error"] else ""
        print(f"  {h['name']:<20} {h['state']:<10} {h['busy']}/{h['slots']} busy{error}")
    print("RUNNING")
    for b in running["builds"]:
        for j in b["jobs"]:
            if j["state"] == "running":
                print(f"  job {j['id']:<7} {b['repo']} {b['branch'] or b['ref']} {j['name']}"
                      f" on {j['host']}:{j['slot']}")
    print(f"QUEUE ({queue['total']})")
    for j in queue["jobs"]:
        print(f"  {j['position']:>4}. job {j['id']:<7} {j['repo']} {j['ref']} {j['name']}"
              f"  waited {j['waited_s']:.0f}s: {j['reason']}")
    if (more := queue["total"] - len(queue["jobs"])) > 0:
        print(f"  … and {more} more")
    print("RECENT BUILDS")
    for b in recent["builds"]:
        print(f"  build {b['id']:<7} {b['state']:<9} {b['repo']} {b['branch'] or b['ref']}"
              f" {b['sha'][:12]} {b['event']}  {b['url']}")
    return 0


if __name__ == "__main__":
    main()
