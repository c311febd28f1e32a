"""The build lists of `/` and `/repos/{repo}`: filters from a plain GET form, pages by key
(`before=` the last id shown, as /api/builds does, so a page costs the same however deep),
and a repo's history strip, drawn on the server as SVG (no script, no inline style).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from statistics import median
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from ..model import Event, JobState
from ..refs import full_ref
from ..store.reads import BuildTime
from .durations import seconds_between, span
from .keys import CONFIG, SCHEDULER, STORE
from .params import MAX_REF_BYTES, error, parse_count
from .shapes import build_json

PAGE = 25  # builds a list shows at once
# Ids a page looks through when filters of two kinds combine (repo or branch, state,
# event): no index serves a pair, and without one a rare pair would read every build.
SCAN = 5000
STRIP = 40  # builds in a history strip
BAR_W, BAR_H = 8, 32  # one strip bar's pitch and the strip's height, in pixels


@dataclass(frozen=True)
class BuildFilter:
    """What a list shows: all empty is every build, newest first. On a repo's page the
    repo comes from the path (`scoped`), not from the form."""

    repo: str = ""
    branch: str = ""
    state: str = ""
    event: str = ""
    before: int | None = None
    scoped: bool = False

    @classmethod
    def parse(cls, request: web.Request, repo: str | None = None) -> BuildFilter:
        """The filter a GET form asked for; 400 for a state or event asyncci has no word
        for, a branch git could not name, or a `before` that is not an id."""
        query = request.query
        state, event = query.get("state", ""), query.get("event", "")
        branch, before = query.get("branch", ""), query.get("before", "")
        if state and state not in set(JobState):
            raise error(web.HTTPBadRequest, f"unknown state {state[:40]!r}")
        if event and event not in set(Event):
            raise error(web.HTTPBadRequest, f"unknown event {event[:40]!r}")
        if len(branch.encode()) > MAX_REF_BYTES or not branch.isprintable():
            raise error(web.HTTPBadRequest, "not a branch name")
        last = parse_count(before) if before else None
        if before and last is None:
            raise error(web.HTTPBadRequest, f"before must be a build id, got {before[:40]!r}")
        return cls(repo=repo if repo is not None else query.get("repo", "")[:100],
                   branch=branch, state=state, event=event, before=last, scoped=repo is not None)

    @property
    def ref(self) -> str | None:
        """The full ref the branch field names: `main` is `refs/heads/main`."""
        if not self.branch:
            return None
        return full_ref(self.branch)

    @property
    def combined(self) -> bool:
        """Filters of more than one kind: a repo and a branch are one (one index holds both)."""
        return sum(map(bool, (self.repo or self.branch, self.state, self.event))) > 1

    @property
    def narrowed(self) -> bool:
        return bool(self.branch or self.state or self.event or (self.repo and not self.scoped))

    def query(self, **change: Any) -> str:
        """This filter as a query string, with `change` applied: the links of the pager."""
        fields = asdict(replace(self, **change))
        if fields.pop("scoped"):
            fields.pop("repo")
        return urlencode({k: v for k, v in fields.items() if v not in ("", None)})


def ref_label(build: Mapping[str, Any]) -> str:
    """What a list calls a build's ref: the branch, `PR 12`, or the ref itself. A Python
    filter rather than a template macro: a list calls it once a row."""
    return str(build["branch"] or (f"PR {build['pr']}" if build["pr"] else build["ref"]))


@dataclass(frozen=True)
class Pager:
    older: str | None  # the query of the next page; None: this is the last
    searched: tuple[int, int] | None = None  # the ids a combined filter looked through


async def builds_page(request: web.Request, chosen: BuildFilter
                      ) -> tuple[list[dict[str, Any]], Pager]:
    """A page of the builds `chosen` names. Combined filters look through SCAN ids at a
    time: a page may then show fewer builds than it could, and its "older" link goes on
    below the ids it looked through."""
    store = request.app[STORE]
    floor = None
    if chosen.combined:
        top = chosen.before if chosen.before is not None else await store.newest_build_id() + 1
        floor = max(0, top - SCAN - 1)
    # A row shows no job, but words a failed build by its jobs ("timed out"): a list of
    # big matrices reads the jobs of its failed builds alone.
    builds = await store.list_builds(
        repo=chosen.repo or None, state=chosen.state or None, ref=chosen.ref,
        event=chosen.event or None, before=chosen.before, after=floor, limit=PAGE + 1,
        jobs_of=(JobState.FAILED,))
    scheduler, url = request.app[SCHEDULER], request.app[CONFIG].server.public_url
    shown = [build_json(b, scheduler, url) for b in builds[:PAGE]]
    if len(builds) > PAGE:
        return shown, Pager(chosen.query(before=builds[PAGE - 1].id))
    if floor:
        return shown, Pager(chosen.query(before=floor + 1), (floor + 1, top - 1))
    return shown, Pager(None)


def strip(times: Sequence[BuildTime]) -> dict[str, Any]:
    """A bar per build, oldest on the left, as tall as it took and coloured by its state,
    with the pass rate of those that ran to the end (a cancelled build says nothing of
    the code: most were superseded)."""
    seconds = [seconds_between(t.started_at, t.finished_at) or 0.0 for t in reversed(times)]
    longest = max(seconds, default=0.0) or 1.0
    bars = []
    for i, (t, took) in enumerate(zip(reversed(times), seconds)):
        height = max(2, round(BAR_H * took / longest))
        bars.append({"id": t.id, "state": str(t.state), "x": i * BAR_W, "y": BAR_H - height,
                     "height": height, "title": f"#{t.id} {t.state}, {span(took)}"})
    judged = [t for t in times if t.state is not JobState.CANCELLED]
    passed = [took for t, took in zip(reversed(times), seconds) if t.state is JobState.PASSED]
    return {"bars": bars, "width": len(bars) * BAR_W, "height": BAR_H,
            "passed": len(passed), "judged": len(judged),
            "usual": span(median(passed)) if passed else None}
