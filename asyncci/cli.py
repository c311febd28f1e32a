"""`asyncci serve | check | trigger | status`: parse, then call. Exit statuses: 0 ok,
1 a failure the command reports (a host down, a refused request), 2 bad config or usage."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp

from .config import Config, ConfigError, load_config


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="asyncci", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (("serve", "run the server"),
                           ("check", "validate the config and reach every host")):
        sub = commands.add_parser(name, help=helptext)
        sub.add_argument("-c", "--config")
    trigger = commands.add_parser("trigger", help="ask a running server for a build")
    trigger.add_argument("repo")
    which = trigger.add_mutually_exclusive_group()
    which.add_argument("--ref")
    which.add_argument("--sha")
    status = commands.add_parser("status", help="queue, running jobs and hosts")
    for sub in (trigger, status):
        sub.add_argument("--url")
        sub.add_argument("-c", "--config")
    args = parser.parse_args(argv)

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

        raise SystemExit(0 if asyncio.run(check(config)) else 1)
    else:
        url = (args.url or load_or_exit(args.config).server.public_url).rstrip("/")
        runner = _trigger(url, args) if args.command == "trigger" else _status(url)
        raise SystemExit(asyncio.run(runner))


async def _call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    headers = {}
    if token := os.environ.get("ASYNCCI_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            async with session.request(method, url, json=body, headers=headers) as response:
                return response.status, await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        print(f"asyncci: cannot reach {url}: {e or type(e).__name__}", file=sys.stderr)
        raise SystemExit(1) from None


async def _trigger(url: str, args: argparse.Namespace) -> int:
    body = {"ref": args.ref} if args.ref else {"sha": args.sha} if args.sha else {}
    status, answer = await _call("POST", f"{url}/api/repos/{args.repo}/builds", body)
    if status != 201:
        print(f"asyncci: {status}: {answer.get('error', answer)}", file=sys.stderr)
        return 1
    print(f"build {answer['id']} {answer['state']} {answer['repo']} {answer['ref']}"
          f" {answer['sha'][:12]}  {answer['url']}")
    return 0


async def _status(url: str) -> int:
    results = [await _call("GET", f"{url}/api/{what}")
               for what in ("hosts", "builds?state=running", "queue")]
    for status, answer in results:
        if status != 200:
            print(f"asyncci: {status}: {answer.get('error', answer)}", file=sys.stderr)
            return 1
    hosts, running, queue = (answer for _, answer in results)
    print("HOSTS")
    for h in hosts["hosts"]:
        error = f"  {h['last_error']}" if h["last_error"] else ""
        print(f"  {h['name']:<20} {h['state']:<10} {h['busy']}/{h['slots']} busy{error}")
    print("RUNNING")
    for b in running["builds"]:
        for j in b["jobs"]:
            if j["state"] == "running":
                print(f"  job {j['id']:<7} {b['repo']} {b['branch'] or b['ref']} {j['name']}"
                      f" on {j['host']}:{j['slot']}")
    print(f"QUEUE ({len(queue['jobs'])})")
    for j in queue["jobs"][:50]:
        print(f"  {j['position']:>4}. job {j['id']:<7} {j['repo']} {j['ref']} {j['name']}"
              f"  waited {j['waited_s']:.0f}s: {j['reason']}")
    return 0


if __name__ == "__main__":
    main()
