"""Commit statuses to GitHub, drained from the store's outbox.

The outbox row of a job's state is written in the same transaction as the state, so a
status is sent after any crash; it is marked sent only once GitHub acknowledged it (2xx),
so an acknowledged state is never sent again (one whose answer a crash lost may be sent
once more: the same state, harmless). Rows go out in order, one at a time: a failing
send is retried with backoff before anything after it, and a rate limit is waited out.
With nothing to send it sleeps until the store says it added rows. The scheduler never
waits for any of this.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
from gidgethub import BadRequest, GitHubBroken, HTTPException, RateLimitExceeded
from gidgethub.aiohttp import GitHubAPI
from gidgethub.apps import get_installation_access_token, get_jwt

from ..config import Config, GitHubConfig
from ..model import JobState, OutboxItem
from ..model.results import TestReport
from ..store import Store

log = logging.getLogger(__name__)
# Woken by new rows, it waits this long first: the scheduler writes a just-queued job's
# place in the queue into its row right after queuing it, and the status should say it.
SETTLE_S = 0.05
BACKOFF_MAX_S = 300.0
GITHUB_STATE = {
    JobState.QUEUED: "pending", JobState.RUNNING: "pending", JobState.PASSED: "success",
    JobState.FAILED: "failure", JobState.ERRORED: "error", JobState.CANCELLED: "error",
}


def status_body(item: OutboxItem, public_url: str,
                tests: TestReport | None = None) -> dict[str, str]:
    """The statuses API body for one outbox row (SPEC §7), told as the row was written,
    however late it goes out. A finished job with failing or fixed tests says what
    changed against the base branch: `2 new failures, 1 fixed`."""
    job, detail = item.job, item.detail
    if tests is not None and (tests.failures or tests.fixed):
        description = tests.summary()
    elif item.state is JobState.RUNNING:
        description = f"running on {detail}"
    elif item.state is JobState.PASSED:
        description = "passed"
    else:
        description = f"{item.state}: {detail}" if detail else str(item.state)
    return {
        "state": GITHUB_STATE[item.state],
        "context": f"asyncci/{job.name}",
        "target_url": f"{public_url.rstrip('/')}/builds/{job.build_id}",
        "description": description[:140],  # GitHub's limit
    }


class Tokens:
    """A token from the config, or a GitHub App's installation token, cached until it is
    about to expire (one installation per repository owner/name)."""

    def __init__(self, config: GitHubConfig) -> None:
        self._config = config
        self._installations: dict[str, tuple[str, float]] = {}

    async def token(self, gh: GitHubAPI, repository: str) -> str | None:
        c = self._config
        if c.app_id is None or c.private_key is None:
            return c.token
        cached = self._installations.get(repository)
        if cached and cached[1] > time.time() + 60:
            return cached[0]
        jwt = get_jwt(app_id=str(c.app_id), private_key=c.private_key)
        installation = await gh.getitem(f"/repos/{repository}/installation", jwt=jwt)
        answer = await get_installation_access_token(
            gh, installation_id=str(installation["id"]), app_id=str(c.app_id),
            private_key=c.private_key)
        expires = time.time() + 3000  # GitHub's tokens live an hour
        self._installations[repository] = (answer["token"], expires)
        return str(answer["token"])


class GitHubReporter:
    def __init__(self, config: Config, store: Store, added: asyncio.Event) -> None:
        """`added` is set whenever the store adds outbox rows."""
        assert config.github is not None
        self._github = config.github
        self._public_url = config.server.public_url
        self._store = store
        self._added = added
        self._tokens = Tokens(config.github)

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            gh = GitHubAPI(session, "asyncci", base_url=self._github.api_url)
            failures = 0
            while True:
                self._added.clear()  # before reading: rows added after the read set it again
                items = await self._store.pending_outbox()
                if not items:
                    await self._added.wait()
                    await asyncio.sleep(SETTLE_S)
                    continue
                for item in items:
                    delay = await self._send(gh, item)
                    if delay:
                        failures += 1
                        await asyncio.sleep(max(delay, min(BACKOFF_MAX_S, 2 ** failures / 4)))
                        break
                    failures = 0

    async def _send(self, gh: GitHubAPI, item: OutboxItem) -> float:
        """Send one status; seconds to wait before trying again (0 when done with it)."""
        tests = None
        if item.state.finished and item.job.spec.junit:
            tests = await self._store.test_report(item.job.id)
        body = status_body(item, self._public_url, tests)
        url = f"/repos/{item.github}/statuses/{item.sha}"
        try:
            token = await self._tokens.token(gh, item.github)
            await gh.post(url, data=body, oauth_token=token)
        except RateLimitExceeded as e:
            # A RateLimit with nothing remaining is falsy: compare with None.
            limit = e.rate_limit
            reset = limit.reset_datetime.timestamp() if limit is not None else time.time() + 60
            log.warning("GitHub rate limit: sending again in %.0f s", reset - time.time())
            return max(1.0, reset - time.time())
        except BadRequest as e:
            if e.status_code == 429 or e.status_code == 403 and "rate limit" in str(e).lower():
                return 60.0
            # A status GitHub will never take (repo gone, no access): drop it, say so.
            log.error("status %s for job %d refused by GitHub (%s): dropped",
                      body["state"], item.job.id, e)
        except (GitHubBroken, HTTPException, aiohttp.ClientError, TimeoutError, OSError) as e:
            log.warning("status for job %d not sent (%s); retrying", item.job.id,
                        e or type(e).__name__)
            return 1.0
        await self._store.mark_sent(item.id)
        return 0.0
