"""The composition root: builds every part, recovers after a restart, runs them in one
TaskGroup and stops them on SIGTERM/SIGINT without waiting for running jobs (they go on,
detached, on their hosts and are reattached at the next start)."""

from __future__ import annotations

import asyncio
import ctypes
import io
import logging
import os
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from .config import Config, HostConfig, RepoConfig
from .hosts.base import Host
from .hosts.local import LocalHost
from .hosts.ssh import SSHHost
from .logs import Logs
from .logs.artifacts import Artifacts
from .mirror import GitError, Mirror
from .model import utcnow
from .planner import Planner
from .scheduler import Scheduler
from .store import Store
from .reporters.github import GitHubReporter
from .triggers.cron import Cron, schedule_error
from .triggers.poller import Poller
from .web.app import create_app

log = logging.getLogger(__name__)
RETENTION_EVERY_S = 3600.0
STOP_WAIT_S = 10.0
KILL_GRACE_S = 10.0  # SPEC §5: SIGTERM, then SIGKILL 10 s later
PR_SET_DUMPABLE = 4
ROOT_WARNING = ("warning: asyncci runs as root: a job unconfined on a local host can read"
                " the server's memory and files; run it, and the hosts' jobs, as an"
                " unprivileged user")


def validate(config: Config) -> list[str]:
    """What config.py cannot check with the stdlib alone, as `PATH:KEY: message` lines."""
    return [f"{config.path}:repos[{i}].schedule: {problem}"
            for i, repo in enumerate(config.repos)
            if repo.schedule and (problem := schedule_error(repo.schedule))]


def make_host(config: HostConfig, kill_grace: float = KILL_GRACE_S) -> Host:
    """The grace from a kill's SIGTERM to its SIGKILL is no config: SPEC fixes it, and only
    tests, which would wait it out, make it short."""
    return LocalHost(config, kill_grace) if config.local else SSHHost(config, kill_grace)


@dataclass
class Server:
    """Every part, built and wired; `run()` serves until `stop()`."""

    config: Config
    store: Store
    logs: Logs
    artifacts: Artifacts
    scheduler: Scheduler
    planner: Planner
    pollers: dict[str, Poller]
    app: web.Application
    outbox: asyncio.Event  # set when the store adds outbox rows: the reporter's wake-up
    mirrors: dict[str, Mirror]
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # serving, queue recovered

    @classmethod
    async def build(cls, config: Config, kill_grace: float = KILL_GRACE_S) -> Server:
        data_dir = config.server.data_dir
        # The queue, logs, artifacts and mirrors are the server's user's alone: logs and
        # mirrors may hold what a private repo holds.
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        data_dir.chmod(0o700)
        hosts = [make_host(h, kill_grace) for h in config.hosts]
        outbox = asyncio.Event()
        store = await Store.open(data_dir / "asyncci.db", on_outbox=outbox.set)
        logs = Logs(data_dir / "logs", config.server.max_log_bytes)
        artifacts = Artifacts(config.server.artifacts_dir, config.server.max_artifact_bytes)
        scheduler = Scheduler(config, store, hosts, logs, artifacts)
        mirrors = {r.name: Mirror(data_dir / "mirrors" / f"{r.name}.git", r.url)
                   for r in config.repos}
        planner = Planner(config, store, mirrors, scheduler.on_enqueued)
        pollers = {r.name: Poller(r, mirrors[r.name], planner) for r in config.repos}
        app = create_app(config, store, scheduler, planner, logs, artifacts,
                         lambda n: pollers[n].poke())
        return cls(config, store, logs, artifacts, scheduler, planner, pollers, app, outbox,
                   mirrors)

    async def run(self, stop: asyncio.Event) -> None:
        runner = web.AppRunner(self.app, shutdown_timeout=2.0, access_log=None)
        await runner.setup()
        try:
            server = self.config.server
            await web.TCPSite(runner, server.listen_host, server.listen_port).start()
            log.info("%s", banner(self.config))
            await self.scheduler.recover()
            self.ready.set()
            await self._serve(stop)
        finally:
            await runner.cleanup()
            for mirror in self.mirrors.values():
                await mirror.close()
            await self.store.close()

    async def _serve(self, stop: asyncio.Event) -> None:
        """Run every part until `stop` (or until one fails, which stops the rest and is
        raised). Stopping waits STOP_WAIT_S at most: a part that does not end by then is
        logged, with where it waits, rather than holding the stop up (SPEC §1: a few
        seconds)."""
        parts = {"scheduler": self.scheduler.run(), "retention": self._expire_logs()}
        parts |= {f"poll {n}": p.run() for n, p in self.pollers.items()}
        parts |= {f"host {n}": h.maintain() for n, h in self.scheduler.hosts.items()}
        parts |= {f"cron {r.name}": Cron(r, self.planner).run()
                  for r in self.config.repos if r.schedule}
        if self.config.github is not None:
            parts["github"] = GitHubReporter(self.config, self.store, self.outbox).run()
        tasks = [asyncio.create_task(work, name=name) for name, work in parts.items()]
        stopped = asyncio.create_task(stop.wait())
        pending: set[asyncio.Task[Any]] = {*tasks, stopped}
        failed: list[BaseException] = []
        try:
            while stopped in pending and not failed:  # a part may end by itself (a probe)
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                failed = [e for t in done if not t.cancelled() and (e := t.exception())]
        finally:
            log.info("stopping; running jobs go on and are reattached at the next start")
            for task in [*tasks, stopped]:
                task.cancel()
            _, left = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
            for task in left:
                where = io.StringIO()
                task.print_stack(file=where)
                log.warning("stopping: %s did not end within %gs:\n%s", task.get_name(),
                            STOP_WAIT_S, where.getvalue())
        if failed:
            raise failed[0]

    async def _expire_logs(self) -> None:
        while True:
            cutoff = utcnow() - timedelta(seconds=self.config.server.log_retention)
            for job_id in await self.store.expire_logs(cutoff):
                self.logs.delete(job_id)
                self.artifacts.delete(job_id)
            await asyncio.sleep(RETENTION_EVERY_S)


def hide_from_jobs() -> None:
    """Not dumpable: this process's /proc/PID/environ, mem and fds are shut to its own
    user, so a job of that user cannot read the tokens the server holds (root's jobs
    still could: the README says to run unprivileged). Children are dumpable again once
    they exec, so jobs are not affected."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux
        log.warning("cannot make the server non-dumpable: jobs may read its environment")


async def serve(config: Config) -> None:
    hide_from_jobs()
    if os.geteuid() == 0:
        log.warning(ROOT_WARNING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await Server.build(config)
    await server.run(stop)


def banner(config: Config) -> str:
    """What whoever started the server wants to know first: where to look, what is built
    where, and whether anyone can change anything (with no token, nobody can)."""
    server, web_config = config.server, config.web
    reads = "public" if web_config.public else "login to read"
    names = [r.name for r in config.repos]
    repos = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    hosts = ", ".join(f"{h.name} ({_where(h)}, {h.slots} slot{'s' if h.slots > 1 else ''})"
                      for h in config.hosts)
    writes = ("writes: enabled (the token of web.token_env, for the API and /login)"
              if web_config.token else
              "writes: DISABLED: no token is set (the variable web.token_env names,"
              " ASYNCCI_TOKEN by default): nobody can log in, trigger or cancel")
    return (f"asyncci dashboard at {server.public_url}/ ({reads}), listening on"
            f" {server.listen_host}:{server.listen_port}\n  repos: {repos or 'none'}\n"
            f"  hosts: {hosts}\n  {writes}")


def _where(host: HostConfig) -> str:
    if host.local:
        return "local"
    return f"{host.user + '@' if host.user else ''}{host.address}:{host.port}"


def stranded(repo: RepoConfig, hosts: Sequence[HostConfig]) -> str | None:
    """Why no configured host can take the repo's jobs, if none can: they would wait for
    good, saying only that no online host has their labels, which reads like an outage.
    Only the repo's own labels are known here (they are every job's, the `script` job's
    alone); an in-repo pipeline's are known only at a commit. Capabilities (`asyncci:…`)
    are earned by probing, never configured, so they are no part of this."""
    needed = frozenset(repo.labels)
    if any(needed <= frozenset(h.labels) for h in hosts):
        return None
    missing = sorted(needed - {label for h in hosts for label in h.labels})
    what = (f"label(s) [{', '.join(missing)}] that no host has" if missing else
            f"labels [{', '.join(sorted(needed))}] that no one host has together")
    return (f"repo {repo.name}: FAILED: its jobs need {what}: they would stay queued forever"
            " (give a host those labels, or take them off the repo)")


class Finding(NamedTuple):
    """One line of `asyncci check`'s answer; a finding not `ok` fails the check."""

    line: str
    ok: bool


async def reach(repo: RepoConfig) -> Finding:
    """Whether the repo answers `git ls-remote`: how many branches it has, or git's words.
    The mirror is a throwaway: `check` touches nothing the server keeps."""
    with tempfile.TemporaryDirectory() as scratch:
        try:
            heads = await Mirror(Path(scratch) / f"{repo.name}.git", repo.url).ls_remote()
        except (GitError, OSError) as e:
            return Finding(f"repo {repo.name}: FAILED: {e}", False)
    return Finding(f"repo {repo.name}: ok; {len(heads)} branch(es)", True)


async def probe(host_config: HostConfig) -> Finding:
    """What the host has: git, bash, how it confines jobs, slots, labels."""
    try:
        host = make_host(host_config)
        versions = await host.probe()
    except Exception as e:  # noqa: BLE001 - every failure is one line for the user
        return Finding(f"{host_config.name}: FAILED: {e}", False)
    return Finding(f"{host.name}: ok; {versions}; slots={host.slots}"
                   f" labels=[{', '.join(sorted(host.labels))}]", True)


async def check(config: Config) -> list[Finding]:
    """Every host probed, every repo reached, and the repos whose labels no host has: a
    finding each, for the CLI to print."""
    found = [Finding(ROOT_WARNING, True)] if os.geteuid() == 0 else []
    found += [await probe(h) for h in config.hosts]
    for repo, reached in zip(config.repos, await asyncio.gather(*map(reach, config.repos))):
        found.append(reached)
        if problem := stranded(repo, config.hosts):
            found.append(Finding(problem, False))
    return found
