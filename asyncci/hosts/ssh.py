"""SSH build hosts: agentless (sshd + git + bash), one asyncssh connection per host and a
channel per command. The only module besides `local.py` that runs jobs, and the only one
that speaks SSH.

`maintain()` keeps the connection: keepalives find a dead host in seconds, `prepare` runs
once per connection, and a lost connection is retried with capped exponential backoff,
capped low while jobs wait for the host, so one back within their `grace` is seen in time.
A job's stream that breaks with the connection waits up to `grace` for the host to come
back and reattaches from the byte the server already has; only after that is the job
given up on this host (HostLost), and the scheduler owes the abandoned attempt a kill,
so two attempts never both report. A finished attempt's files come back over SFTP on the
same connection, with the same patience.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import asyncssh

from ..config import HostConfig
from ..logs.joblog import JobLog
from ..model import HostState, utcnow
from .base import Collected, HostLost, JobRun, Outcome
from .collection import Entry, collect_files
from .wrapper import FORGET, Wrapper, capabilities, command, pump

log = logging.getLogger(__name__)
SFTP_READ = 4 << 20
KEEPALIVE_S = 2.0  # with 2 unanswered keepalives: a dead host is seen in 4-6 s
KEEPALIVE_MISSES = 2
CONNECT_TIMEOUT_S = 10.0
BACKOFF_MAX_S = 10.0  # a host that returns is noticed within this
BACKOFF_WAITED_S = 1.0  # ... and within this while jobs wait for it
COMMAND_TIMEOUT_S = 60.0
STREAM_RETRIES = 3  # a stream that broke while its connection lived (a killed `tail`)


def describe(error: BaseException, config: HostConfig) -> str:
    """One line a user can act on."""
    where = f"{config.address}:{config.port}"
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        return f"host key of {where} not trusted: {_key_problem(config)}"
    if isinstance(error, asyncssh.PermissionDenied):
        return f"authentication refused for user {config.user or '(default)'} at {where}"
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused by {where}"
    if isinstance(error, TimeoutError):
        return f"no answer from {where} (timed out)"
    if isinstance(error, asyncssh.Error):
        return f"{where}: {error.reason}"
    return f"{where}: {getattr(error, 'strerror', None) or error}"


def _key_problem(config: HostConfig) -> str:
    """Tell an unknown host from a changed key, as far as known_hosts says."""
    path = config.known_hosts or Path("~/.ssh/known_hosts").expanduser()
    name = config.address if config.port == 22 else f"[{config.address}]:{config.port}"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return f"unknown host ({path} cannot be read)"
    listed = any(name in line.split(maxsplit=1)[0].split(",") for line in lines if line.strip())
    if listed:
        return f"its key CHANGED since it was recorded in {path}"
    return f"unknown host (not in {path})"


class SSHHost:
    def __init__(self, config: HostConfig, kill_grace: float) -> None:
        self.name = config.name
        self.labels = frozenset(config.labels)
        self.capabilities, self.abilities = capabilities(config, None)
        self.slots = config.slots
        self.state = HostState.CONNECTING
        self.last_error: str | None = None
        self.latency_ms: float | None = None
        self.offline_since: datetime | None = None
        self._config = config
        self._wrapper = Wrapper(config, config.workdir, kill_grace)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._changed = asyncio.Event()
        self._on_change: Callable[[], None] = lambda: None
        self._waiters = 0  # jobs waiting for the host to be back

    def watch(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change

    def _set(self, state: HostState, error: str | None = None) -> None:
        if error:
            self.last_error = error
        if state is not self.state:
            log.info("host %s %s%s", self.name, state, f": {error}" if error else "")
            if state is HostState.ONLINE:
                self.offline_since = None
            elif self.state is HostState.ONLINE:
                self.offline_since = utcnow()
        self.state = state
        self._changed.set()
        self._changed = asyncio.Event()
        self._on_change()

    async def connect(self) -> asyncssh.SSHClientConnection:
        c = self._config
        started = time.monotonic()
        conn = await asyncssh.connect(
            c.address or "", c.port, username=c.user or (),
            client_keys=[str(c.key_file)] if c.key_file else (),
            known_hosts=str(c.known_hosts) if c.known_hosts else (),
            keepalive_interval=KEEPALIVE_S, keepalive_count_max=KEEPALIVE_MISSES,
            connect_timeout=CONNECT_TIMEOUT_S, config=None,
        )
        self.latency_ms = round((time.monotonic() - started) * 1000, 1)
        return conn

    async def maintain(self) -> None:
        """Keep one connection up for as long as the server runs."""
        failures = 0
        try:
            while True:
                try:
                    conn = await self.connect()
                    try:
                        await self._prepare(conn)
                        self.capabilities, self.abilities = capabilities(
                            self._config, await self._probe(conn, tidy=True))
                    except BaseException:  # a failure, or the server stopping meanwhile
                        conn.close()
                        raise
                except (OSError, asyncssh.Error, TimeoutError, HostLost) as e:
                    failures += 1
                    self._set(HostState.OFFLINE, describe(e, self._config))
                    cap = BACKOFF_WAITED_S if self._waiters else BACKOFF_MAX_S
                    delay = min(cap, 0.5 * 2 ** min(failures, 10))
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                    continue
                failures = 0
                self._conn = conn
                self._set(HostState.ONLINE)
                await conn.wait_closed()
                self._conn = None
                self._set(HostState.OFFLINE, "connection lost")
        finally:
            if self._conn is not None:
                # The server stops: jobs go on, detached, and a command in flight (a kill
                # that waits for its attempt to end) must not hold the stop up.
                self._conn.abort()
                await self._conn.wait_closed()

    async def _prepare(self, conn: asyncssh.SSHClientConnection) -> None:
        if self._config.prepare:
            result = await self._command(conn, self._config.prepare.encode())
            if result.exit_status != 0:
                raise HostLost(f"prepare failed (exit {result.exit_status}): "
                               f"{_text(result.stderr or result.stdout)[-500:]}")

    async def _probe(self, conn: asyncssh.SSHClientConnection, tidy: bool = False) -> str:
        """Versions of git and bash, then what the host confines with (see job.sh); with
        `tidy` (once per connection), old attempts' directories go too."""
        result = await self._command(conn, self._wrapper.input("probe", tidy=tidy))
        if result.exit_status != 0:
            raise HostLost(_text(result.stdout or result.stderr).strip() or "git or bash missing")
        return _text(result.stdout).strip()

    async def _command(self, conn: asyncssh.SSHClientConnection, script: bytes
                       ) -> asyncssh.SSHCompletedProcess:
        return await asyncio.wait_for(
            conn.run(command(script), input=script, encoding=None, check=False),
            COMMAND_TIMEOUT_S)

    async def _online(self, deadline: float) -> asyncssh.SSHClientConnection:
        while True:
            conn = self._conn
            if conn is not None and not conn.is_closed() and self.state is HostState.ONLINE:
                return conn
            left = deadline - time.monotonic()
            if left <= 0:
                raise HostLost(f"host {self.name} unreachable for more than "
                               f"{self._config.grace:g}s: {self.last_error or 'not connected'}")
            self._waiters += 1
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass
            finally:
                self._waiters -= 1

    async def run(self, run: JobRun, log: JobLog, attach: bool) -> Outcome:
        deadline = time.monotonic() + self._config.grace
        broken, lost = 0, False
        while True:
            conn = await self._online(deadline)
            if lost:
                log.note(f"[asyncci] host {self.name} is back: reattached")
                lost = False
            try:
                return await self._stream(conn, run, log, attach)
            except (OSError, asyncssh.Error, HostLost) as e:
                # The job runs on, detached: from now on it is only ever reattached.
                attach = True
                if conn.is_closed():
                    deadline = time.monotonic() + self._config.grace
                    log.note(f"[asyncci] host {self.name} lost at {_clock()};"
                             f" waiting until {_clock(self._config.grace)} for it")
                    lost = True
                    continue
                broken += 1
                if broken > STREAM_RETRIES:
                    raise HostLost(describe(e, self._config)) from e

    async def _stream(self, conn: asyncssh.SSHClientConnection, run: JobRun, job_log: JobLog,
                      attach: bool) -> Outcome:
        mode = "attach" if attach else "start"
        data = self._wrapper.input(mode, run, job_log.raw_offset)
        proc = await conn.create_process(command(data), encoding=None)
        try:
            proc.stdin.write(data)
            outcome = await pump(proc.stdout, proc.stderr, job_log)
            try:
                if outcome.told:
                    proc.stdin.write(FORGET)
                proc.stdin.write_eof()
                await asyncio.wait_for(proc.wait_closed(), COMMAND_TIMEOUT_S)
            except (OSError, asyncssh.Error, TimeoutError) as e:
                # The job ended and its log is here; the host's copy goes with its directory.
                log.warning("host %s: job %s's log not forgotten there: %s", self.name,
                            run.dirname, e)
            return outcome
        finally:
            proc.close()

    async def kill(self, run: JobRun, reap: bool = False) -> None:
        conn = self._conn
        if conn is None or conn.is_closed():
            raise HostLost(f"host {self.name} is not connected")
        mode = "reap" if reap else "kill"
        try:
            result = await self._command(conn, self._wrapper.input(mode, run))
        except (OSError, asyncssh.Error, TimeoutError) as e:
            raise HostLost(describe(e, self._config)) from e
        if result.exit_status != 0:
            raise HostLost(f"{mode} of job {run.dirname} failed (exit {result.exit_status}):"
                           f" {_text(result.stderr or result.stdout).strip()[-500:]}")

    async def collect(self, run: JobRun, dest: Path) -> Collected:
        deadline = time.monotonic() + self._config.grace
        while True:
            conn = await self._online(deadline)
            try:
                async with conn.start_sftp_client() as sftp:
                    files = _SFTPFiles(sftp, self._wrapper.job_dir(run))
                    return await collect_files(files, dest, run.artifact_cap)
            except (OSError, asyncssh.Error) as e:
                if conn.is_closed() and time.monotonic() < deadline:
                    continue  # a dropped connection: start over once the host is back
                why = describe(e, self._config)
                if isinstance(e, asyncssh.ChannelOpenError):  # the SFTP session was refused
                    why += " (is there a `Subsystem sftp` line in its sshd_config?)"
                raise HostLost(why) from e

    def shell_command(self, repo: str, slot: int) -> str | None:
        c = self._config
        target = f"{c.user}@{c.address}" if c.user else str(c.address)
        port = f" -p {c.port}" if c.port != 22 else ""
        inner = f"cd {shlex.quote(self._wrapper.workspace(repo, slot))} && exec bash"
        return f"ssh -t{port} {target} {shlex.quote(inner)}"

    async def probe(self) -> str:
        try:
            async with await self.connect() as conn:
                probed = await self._probe(conn)
                server = conn.get_extra_info("server_version") or "ssh"
                sftp = await _sftp_works(conn)
        except (OSError, asyncssh.Error, TimeoutError) as e:
            raise HostLost(describe(e, self._config)) from e
        return (f"{server.removeprefix('SSH-2.0-')}; {probed.splitlines()[0]}; "
                + ("sftp" if sftp else "NO SFTP: artifacts and test results cannot be fetched")
                + f"; {capabilities(self._config, probed)[1]}")


async def _sftp_works(conn: asyncssh.SSHClientConnection) -> bool:
    """Jobs run without it; only what they leave behind comes back over SFTP."""
    try:
        async with conn.start_sftp_client():
            return True
    except asyncssh.ChannelOpenError:
        return False


class _SFTPFiles:
    """An attempt's directory over SFTP. OpenSSH lists a directory with lstat, so a symlink
    there is seen as one and refused; files are read through, so even one swapped for a
    symlink after it was listed never becomes a symlink on the server, and never brings
    more than the cap."""

    def __init__(self, sftp: asyncssh.SFTPClient, root: str) -> None:
        self._sftp = sftp
        self._root = root

    def _path(self, path: str) -> bytes:
        return f"{self._root}/{path}".encode()

    async def listdir(self, path: str) -> list[Entry]:
        with _file_errors():
            try:
                names = await self._sftp.readdir(self._path(path))
            except asyncssh.SFTPNoSuchFile:
                return []
        return [Entry(cast(bytes, n.filename), n.attrs.permissions or 0, n.attrs.size or 0)
                for n in names]

    async def copy(self, path: str, target: Path, limit: int) -> int:
        copied = 0
        with _file_errors(), open(target, "wb") as out:
            async with self._sftp.open(self._path(path), "rb") as f:
                # Large reads: asyncssh splits them into parallel requests.
                while copied < limit and (data := await f.read(min(SFTP_READ, limit - copied))):
                    out.write(cast(bytes, data))
                    copied += len(data)
        return copied

    async def read(self, path: str, limit: int) -> bytes:
        with _file_errors():
            async with self._sftp.open(self._path(path), "rb") as f:
                return cast(bytes, await f.read(limit))


@contextmanager
def _file_errors() -> Iterator[None]:
    """One file's problem (gone, unreadable) is an OSError to `collect_files`; a broken
    session stays an asyncssh.Error: the host is lost."""
    try:
        yield
    except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection, asyncssh.SFTPBadMessage):
        raise
    except asyncssh.SFTPError as e:
        raise OSError(e.reason) from e


def _clock(later_s: float = 0.0) -> str:
    return f"{utcnow() + timedelta(seconds=later_s):%H:%M:%S} UTC"


def _text(data: bytes | str | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""
