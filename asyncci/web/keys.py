"""The typed keys that carry asyncci's services into aiohttp handlers; nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from aiohttp import web

from ..config import Config
from ..logs import Logs
from ..logs.artifacts import Artifacts
from ..planner import Planner
from ..scheduler import Scheduler
from ..store import Store
from .throttle import Throttle

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
SCHEDULER = web.AppKey("scheduler", Scheduler)
PLANNER = web.AppKey("planner", Planner)
LOGS = web.AppKey("logs", Logs)
ARTIFACTS = web.AppKey("artifacts", Artifacts)
# Polls a repo now; the web layer may not reach the pollers themselves.
POKE: web.AppKey[Callable[[str], None]] = web.AppKey("poke")
# Work accepted by a webhook and done after the answer; cancelled at shutdown.
BACKGROUND: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("background")
# Live login sessions, keyed hash → expiry: the store's, cached so that checking a
# cookie on every request is a dict lookup.
SESSIONS: web.AppKey[dict[str, datetime]] = web.AppKey("sessions")
THROTTLE = web.AppKey("throttle", Throttle)
# Webhook bodies read at once: each may be 25 MB before its signature can be checked.
WEBHOOK_READS = web.AppKey("webhook_reads", asyncio.Semaphore)
# Log searches at once: each reads a whole log (50 MB: a fifth of a second of a core).
SEARCHES = web.AppKey("searches", asyncio.Semaphore)
