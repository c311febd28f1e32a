"""What a request asks, read and checked before anything acts on it (numbers in the query
and the path, a JSON body, a ref or sha to build), and the JSON error answer for what
cannot be: a 400 or a 404 that says why, never a 500.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

MAX_OFFSET = 2**62  # byte offsets and ids: far beyond any log, within SQLite's integers
# What git takes as a ref (git-check-ref-format), and a bound that keeps its command line
# short: a control or special character, `..`, `@{`, `//`, a part starting with `.` or
# ending in `.lock`, a start with `-` (an option), `/` or `.`, an end with `/` or `.`.
MAX_REF_BYTES = 1000
BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(/|\Z)|\A[-/.]|[/.]\Z")
SHA_SHAPE = re.compile(r"[0-9a-f]{4,64}")  # the planner says whether it names a commit


def error(status: type[web.HTTPError], message: str) -> web.HTTPError:
    return status(text=json.dumps({"error": message}), content_type="application/json")


def parse_count(raw: str, hi: int = MAX_OFFSET) -> int | None:
    """`raw` as a decimal from 0 to `hi`, or None. int() alone takes `-5`, ` 7 ` and `1_0`,
    and raises on `²` (a digit to str.isdigit) and on 5000 digits."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(hi)):
        return None
    value = int(raw)
    return value if value <= hi else None


def count(name: str, raw: str | None, default: int | None, lo: int = 0,
          hi: int = MAX_OFFSET) -> int | None:
    """`raw`, the value of `name`, from `lo` to `hi`; `default` when absent; else a 400."""
    if raw is None or raw == "":
        return default
    value = parse_count(raw, hi)
    if value is None or value < lo:
        raise error(web.HTTPBadRequest,
                    f"{name} must be an integer from {lo} to {hi}, got {raw[:40]!r}")
    return value


def query_count(request: web.Request, name: str, default: int | None, lo: int = 0,
                hi: int = MAX_OFFSET) -> int | None:
    return count(name, request.query.get(name), default, lo, hi)


def path_id(request: web.Request, name: str) -> int:
    """The id in the path: anything else names nothing here, a 404."""
    raw = request.match_info[name]
    value = parse_count(raw)
    if value is None:
        raise error(web.HTTPNotFound, f"no such id {raw[:40]!r}")
    return value


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, LookupError, RecursionError):  # LookupError: an unknown charset
        raise error(web.HTTPBadRequest, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise error(web.HTTPBadRequest, "the body must be a JSON object")
    return body


def target_problem(ref: str | None, sha: str | None) -> str | None:
    """Why a person's ref or sha cannot be what they build, checked before any git runs:
    git would refuse it anyway, but only after a fetch, or with a command line too long."""
    if ref is not None and (not ref.isprintable() or len(ref.encode()) > MAX_REF_BYTES
                            or ref == "@" or BAD_REF.search(ref)):
        return f"not a git ref name: {ref[:100]!r}"
    if sha is not None and not SHA_SHAPE.fullmatch(sha):
        return f"not a commit sha (4 to 64 hex digits): {sha[:100]!r}"
    return None
